"""Bounce reasons in plain words: one sentence per reason and, where it helps, what to do.

The reason codes are Sisimai's vocabulary (`bounce_reasons.REASONS`), which names the cause a
mail server gave, not what it means for the person who sent the mail. A temporary refusal
("451 4.7.1 Greylisted, try again later") is classified `blocked` like a blocklisting, yet the
two call for opposite things (wait, or ask to be allow-listed), so `describe` also reads
whether the failure was temporary and what the server said. Pure: no I/O.
"""

from __future__ import annotations

import re

# reason -> (what happened, what to do or "" when nothing helps)
SENTENCES: dict[str, tuple[str, str]] = {
    "userunknown": ("The address does not exist at the recipient's mail server.",
                    "Check the address for typos, or remove it from your list."),
    "hostunknown": ("The recipient's domain does not exist or has no mail server.",
                    "Check the part after the @ for typos."),
    "hasmoved": ("The recipient has moved to another address.",
                 "Ask them for the new address and update your list."),
    "mailboxfull": ("The recipient's mailbox is full.",
                    "Try again in a few days, or reach them another way."),
    "suspend": ("The recipient's mailbox is suspended or disabled.",
                "Try again later; if it keeps bouncing, remove it from your list."),
    "filtered": ("The recipient's server refused the message because of the recipient's own "
                 "filter or settings.",
                 "Ask the recipient to accept mail from your address."),
    "rejected": ("The recipient's server refused your sender address.",
                 "Check that your From address and its domain are set up correctly."),
    "blocked": ("The recipient's server refused mail from your sending server or its IP "
                "address.",
                "Ask the recipient's admin to allow-list your server, or check whether your "
                "IP is on a block list."),
    "spamdetected": ("The recipient's server took the message for spam.",
                     "Change the content or ask the recipient's admin to allow-list you."),
    "virusdetected": ("The recipient's server reported a virus or malware in the message.",
                      "Check the attachments."),
    "policyviolation": ("The message breaks a rule of the recipient's organisation (for "
                        "example an attachment type or a members-only list).",
                        "Ask the recipient's admin what is allowed."),
    "contenterror": ("The recipient's server refused the message's format or content.",
                     "Check attachments and formatting."),
    "notcompliantrfc": ("The message breaks the email standards (for example a duplicate "
                        "header).", "Report this to your Postway admin."),
    "mesgtoobig": ("The message is too large for the recipient's server.",
                   "Send smaller attachments or a link instead."),
    "exceedlimit": ("The message is over a limit the recipient's admin set (size or number of "
                    "recipients).", "Send it smaller or to fewer recipients at once."),
    "expired": ("Delivery kept failing until Postway gave up retrying.",
                "Check the address, then send again later."),
    "networkerror": ("Postway could not reach the recipient's mail server (a network or DNS "
                     "problem).", "Try again later."),
    "authfailure": ("The recipient's server could not verify that your domain sent it (SPF, "
                    "DKIM or DMARC failed).",
                    "Ask your Postway admin to check the domain's SPF, DKIM and DMARC "
                    "records."),
    "securityerror": ("A security requirement was not met (for example authentication or an "
                      "encrypted connection).", "Report this to your Postway admin."),
    "norelaying": ("The server refused to pass the message on to the recipient's domain.",
                   "Check the address's domain; report it to your Postway admin if it is "
                   "right."),
    "requireptr": ("The recipient's server requires the sending server's IP address to have a "
                   "reverse DNS name, and it has none.",
                   "Ask your Postway admin to set up reverse DNS for the sending IP."),
    "badreputation": ("The recipient's server judged the sending IP or domain's reputation too "
                      "low.", "Send less, to engaged recipients only, and try again later."),
    "speeding": ("The recipient's server is limiting how fast it accepts mail from you.",
                 "Postway will retry more slowly."),
    "ratelimited": ("The server is limiting how fast mail may be sent.",
                    "Postway will retry more slowly."),
    "toomanyconn": ("The recipient's server had too many connections or recipients at once.",
                    "Postway will retry."),
    "syntaxerror": ("The recipient's server did not understand a command in the conversation.",
                    "Report this to your Postway admin."),
    "systemerror": ("The recipient's mail system had an internal error.", "Try again later."),
    "systemfull": ("The recipient's mail system is out of storage.", "Try again later."),
    "notaccept": ("The recipient's domain does not accept email at all.",
                  "Remove the address from your list."),
    "mailererror": ("The program that delivers mail on the recipient's side failed.",
                    "Try again later."),
    "onhold": ("The bounce did not say clearly why delivery failed.",
               "Read the server's message below."),
    "undefined": ("The bounce gave no reason.", "Read the server's message below."),
    "vacation": ("The recipient is away and sent an automatic reply; the message was "
                 "delivered.", ""),
    "feedback": ("The recipient reported the message as spam.",
                 "Stop sending to this address."),
    "delivered": ("The message was delivered.", ""),
}

_LATER = ("The receiving server asked us to try again later; Postway will retry.", "")
_GREYLIST_RE = re.compile(
    r"gr[ae]y ?list|try (?:again )?later|retry (?:later|again|in)|temporar(?:il)?y? (?:deferred"
    r"|rejected|refused|unavailable|failure|blocked)|please (?:try again|retry)", re.IGNORECASE)
# Reasons that name a refusal of the sender or its server: temporary ones mean "not now".
_REFUSALS = frozenset({"blocked", "rejected", "filtered", "onhold", "undefined", "policyviolation",
                       "securityerror", "systemerror", "toomanyconn", "badreputation"})


def describe(reason: str | None, hard: bool = False, status: str | None = None,
             diagnostic: str | None = None) -> str:
    """One or two plain sentences for a failed delivery: what happened and what to do.

    A temporary refusal (a 4.x.x status, or a soft failure whose words ask to try again later,
    as greylisting does) is described as such, never as a block."""
    words = (diagnostic or "")[:2000]
    temporary = (status or "").startswith("4") or (
        not hard and bool(_GREYLIST_RE.search(words)) and not (status or "").startswith("5"))
    if reason in _REFUSALS and temporary:
        what, todo = _LATER
    else:
        what, todo = SENTENCES.get(reason or "", SENTENCES["undefined"])
    return f"{what} {todo}".strip()
