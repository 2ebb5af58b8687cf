from postway.cli import main

main()
