"""Pure rules with no I/O: addresses, message building, states, bounce taxonomy."""
