"""Mailbox providers that publish their own error codes: read the code, not the prose.

Large providers put a label in their SMTP replies (Cox's "AUP#CXBL", Orange's "OFR_506",
Spectrum's "AUP#In-1310") and document what each means; some reuse a generic phrase for a
specific cause. When the recipient's domain or the remote MTA belongs to such a provider, its
documented meaning decides the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from postway.domain.bounce_rules import Decision

# (raw diagnostic, lower-cased diagnostic, status, SMTP command) -> reason or ""
_Rule = Callable[[str, str, str | None, str | None], str]


def _phrases(table: dict[str, tuple[str, ...]]) -> _Rule:
    def rule(raw: str, low: str, status: str | None, command: str | None) -> str:
        for reason, phrases in table.items():
            if any(p in low for p in phrases):
                return reason
        return ""
    return rule


# Cox: https://www.cox.com/residential/support/email-error-codes.html ("AUP#<code>").
_COX_CODES = {
    "CXBL": "blocked", "CDRBL": "blocked", "CXDNS": "requireptr", "CXSNDR": "authfailure",
    "CXSMTP": "rejected", "CXCNCT": "toomanyconn", "CXMXRT": "toomanyconn",
    "CXTHRT": "securityerror", "CXMJ": "securityerror",
}
_COX_WORDS = _phrases({
    "blocked": ("too many bad commands from", "too many invalid recipients"),
    "requireptr": ("dns check failure - try again later", "rejected - no rdns"),
    "policyviolation": ("esmtp no data before greeting", "attachment extension is forbidden"),
    "systemerror": ("esmtp server temporarily not available",),
    "toomanyconn": ("too many sessions from", "requested action aborted: try again later",
                    "message threshold exceeded"),
    "rejected": ("sender rejected",),
    "userunknown": ("recipient rejected",),
})
_AUP_RE = re.compile(r"AUP#([A-Za-z0-9]+)")


def _cox(raw: str, low: str, status: str | None, command: str | None) -> str:
    m = _AUP_RE.search(raw)
    if m:
        code = m.group(1).upper()
        if code.startswith("IPBL"):
            return "blocked"
        if code.startswith("URLBL"):
            return "spamdetected"
        if code in _COX_CODES:
            return _COX_CODES[code]
    return _COX_WORDS(raw, low, status, command)


# Spectrum/Charter: "AUP#In-1310" or "AUP#Out-1000"; four-digit codes grouped in ranges.
_SPECTRUM_RANGES = (
    (1000, 1000, "blocked"), (1010, 1080, "rejected"), (1090, 1090, "systemerror"),
    (1100, 1150, "requireptr"), (1160, 1190, "policyviolation"), (1200, 1250, "blocked"),
    (1260, 1260, "networkerror"), (1300, 1340, "toomanyconn"), (1350, 1490, "speeding"),
    (1500, 1520, "rejected"), (1530, 1530, "mesgtoobig"), (1540, 1550, "speeding"),
    (1560, 1560, "policyviolation"), (1580, 1580, "speeding"),
)
_SPECTRUM_RE = re.compile(r"AUP#\D{0,8}(\d{4})\b")


def _spectrum(raw: str, low: str, status: str | None, command: str | None) -> str:
    m = _SPECTRUM_RE.search(raw)
    if not m:
        return ""
    code = int(m.group(1))
    return next((r for lo, hi, r in _SPECTRUM_RANGES if lo <= code <= hi), "")


# Orange / La Poste (France PTT): "LPN007_416", "OFR_506", "OUK_513": the trailing number.
_FRANCE_CODES = {
    "101": "blocked", "102": "blocked", "103": "blocked", "104": "toomanyconn",
    "305": "securityerror", "401": "authfailure", "402": "securityerror", "403": "rejected",
    "405": "rejected", "415": "rejected", "416": "userunknown", "417": "mailboxfull",
    "420": "suspend", "421": "rejected", "426": "suspend", "505": "systemerror",
    "506": "spamdetected", "510": "blocked", "514": "mesgtoobig", "517": "authfailure",
    "630": "policyviolation", "999": "blocked",
}
_FRANCE_RE = re.compile(r"\b(?:lpnaaa|lpn|ofr|ouk)\d{0,3}[_-](\d{3})\b")


def _france(raw: str, low: str, status: str | None, command: str | None) -> str:
    codes = _FRANCE_RE.findall(low)
    if codes:
        return _FRANCE_CODES.get(codes[-1], "")
    return "authfailure" if "spf/dns de votre nom de domaine" in low else ""


_YAHOO = _phrases({
    "authfailure": ("yahoo requires all senders to authenticate",),
    "blocked": ("because the ip is in spamhaus's list", "on spamhaus xbl"),
    "norelaying": ("relaying denied for ",),
    "notcompliantrfc": ("headers are not rfc compliant",),
    "policyviolation": ("not accepted for policy reasons",),
    "rejected": ("temporarily deferred due to unexpected volume or user complaints",
                 "unresolvable rfc.5321", "will be permanently deferred"),
    "speeding": ("user is receiving mail too quickly",),
    "suspend": (" is no longer valid.", "this mailbox is disabled"),
    "syntaxerror": ("syntax error in parameters or arguments",),
    "toomanyconn": ("max message per connection reached",),
    "userunknown": ("dd this user doesn't have a ", "mailbox not found"),
})

_MESSAGELABS = _phrases({
    "authfailure": ("domain authentication fail",),
    "badreputation": ("connection rejected by policy",),
    "rejected": ("sender envelope domain not allowed", "your domain has been blocked",
                 "your email address has been blocked", "badmailfrom list",
                 "your email address has been blacklisted", "your domain has been blacklisted"),
    "blocked": ("your ip is in the pbl", "your ip address has been "),
    "contenterror": ("stray linefeeds in message",),
    "norelaying": (" as a relay, ",),
    "notcompliantrfc": ("requested action aborted [4]", "this message is not rfc 5322"),
    "securityerror": ("turn on smtp authentication",),
    "spamdetected": ("message filtered", "filtered by outbound scanning"),
    "toomanyconn": ("too many recipients received this hour", "too many messages"),
    "userunknown": ("no such user", "invalid recipient", "mailbox is not allowed"),
})

_MIMECAST = _phrases({
    "authfailure": ("spf sender invalid", "dkim sender invalid", "dmarc sender invalid"),
    "badreputation": ("internal resources are temporarily unavailable", "ip reputation"),
    "virusdetected": ("email rejected due to security policies",),
    "blocked": ("sender address blocked", "recipient temporarily unavailable",
                "ip temporarily blacklisted"),
    "mesgtoobig": ("maximum email size exceeded",),
    "networkerror": ("incorrect hostname used for inbound", "mail loop detected"),
    "norelaying": ("open relay not allowed", "open relay is not allowed"),
    "notaccept": ("account inbounds disabled",),
    "policyviolation": ("anti-spoofing policy", "content examination policy",
                        "host network not allowed", "host network, not allowed"),
    "rejected": ("administrative prohibition envelope blocked", "envelope blocked - user",
                 "blocked senders", "block policy for envelope from"),
    "securityerror": ("incorrect authentication data", "submitter failed to"),
    "systemerror": ("unable to process connection at this time", "message ended early",
                    "unable to process command", "unable to process an email at this time"),
    "toomanyconn": ("account service is temporarily unavailable", "too many recipients",
                    "exceeding outbound thread limit"),
    "userunknown": ("invalid address", "user unknown", "invalid recipient"),
})

_MICROSOFT = _phrases({
    "userunknown": ("recipientnotfound", "recipnotfound", "resolver.adr.invalidaddress",
                    "resolver.adr.recipientnotfound", "recipient not found by smtp address"),
    "authfailure": ("does not pass dmarc verification", "must pass either spf or dkim",
                    "sender policy framework violation", "required authentication level"),
    "badreputation": ("rate limited due to ip reputation",),
    "blocked": ("banned sending ip", "banned sender", "using customer block list",
                "access denied, bad helo", "access denied, rejected by recipient",
                "part of their network is on our block list"),
    "mailboxfull": ("resolver.rst.recipsizelimit",),
    "mesgtoobig": ("message size exceeds fixed maximum",),
    "expired": ("queue expired; message expired", "message expired"),
    "suspend": ("mailbox is disabled", "account is disabled"),
})

_ZOHO = _phrases({
    "authfailure": ("email rejected per dmarc policy",),
    "blocked": ("greylisted, try again after some time",),
    "rejected": ("email cannot be delivered. reason: email flagged as spam",
                 "mail rejected by destination domain"),
    "policyviolation": ("email policy violation detected", "delivery restricted by policy"),
    "systemerror": ("temporary system error",),
    "userunknown": ("user does not exist",),
    "virusdetected": (" detected by zoho mail",),
})

_GSUITE = _phrases({
    "notaccept": ("returned null mx", "doesn't receive email"),
    "networkerror": (" responded with code nxdomain", "had no relevant answers",
                     "domain name not found"),
})

_CLOUDFLARE = _phrases({"systemerror": ("upstream error",)})

# (provider rule, host or domain suffixes). A recipient domain matches a provider when one of
# its host names ends with that domain; a remote MTA when its name ends with the suffix.
# (provider, the page its meaning rests on, its rule, host or domain suffixes). A recipient
# domain matches a provider when one of its host names ends with that domain; a remote MTA
# when its name ends with the suffix.
_PROVIDERS: tuple[tuple[str, str, _Rule, tuple[str, ...]], ...] = (
    ("cox", "Cox: Email error codes (AUP#CX... codes)", _cox, ("cox.net",)),
    ("spectrum", "Spectrum/Charter: Email error codes (AUP#In-/Out- codes)", _spectrum,
     ("charter.net",)),
    ("orange", "Orange / La Poste: codes d'erreur SMTP (OFR_, LPN, OUK_ codes)", _france,
     (".laposte.net", ".orange.fr", ".wanadoo.fr")),
    ("yahoo", "Yahoo Sender Hub: SMTP error codes", _YAHOO, (".yahoodns.net",)),
    ("messagelabs", "Broadcom/Symantec Email Security.cloud: SMTP error codes", _MESSAGELABS,
     (".messagelabs.com",)),
    ("mimecast", "Mimecast: SMTP error codes", _MIMECAST, (".mimecast.com",)),
    ("microsoft", "Microsoft Learn: Email non-delivery reports and SMTP errors in Exchange "
     "Online", _MICROSOFT, (".prod.outlook.com", ".protection.outlook.com",
                            ".onmicrosoft.com", ".exchangelabs.com")),
    ("zoho", "Zoho Mail: SMTP error codes", _ZOHO, (".zoho.com", ".zohomail.com")),
    ("google", "Google Workspace: SMTP error reference", _GSUITE, ("googlemail.com",)),
    ("cloudflare", "Cloudflare Email Routing: SMTP errors", _CLOUDFLARE,
     (".mx.cloudflare.net",)),
)


def _host(value: str | None) -> str:
    host = (value or "").strip().lower()
    host = host.split(";", 1)[-1].strip().split()[0] if host.strip() else ""
    return host.strip("[]<>.")


def provider_reason(recipient: str | None, remote_mta: str | None, diagnostic: str,
                    status: str | None, command: str | None = None,
                    reporter: str | None = None) -> str:
    """The reason a known provider's documented code or wording names, else ""."""
    found = provider_decision(recipient, remote_mta, diagnostic, status, command, reporter)
    return found.reason if found else ""


def provider_decision(recipient: str | None, remote_mta: str | None, diagnostic: str,
                      status: str | None, command: str | None = None,
                      reporter: str | None = None) -> Decision | None:
    """The reason a known provider's documented code or wording names, with the page it rests
    on, else None.

    The provider is recognised by the recipient's domain, else the remote MTA that answered,
    else the MTA that wrote the report."""
    if not diagnostic:
        return None
    domain = (recipient or "").rpartition("@")[2].lower()
    found = next((p for p in _PROVIDERS
                  if domain and any(s.endswith(domain) or domain.endswith(s) for s in p[3])),
                 None)
    for host in (_host(remote_mta), _host(reporter)):
        if found is None and host:
            found = next((p for p in _PROVIDERS if any(host.endswith(s) for s in p[3])), None)
    if found is None:
        return None
    name, source, rule, _ = found
    low = " ".join(diagnostic[:8000].lower().split())
    reason = rule(diagnostic[:8000], low, status, command)
    if not reason:
        return None
    return Decision(reason, f"provider.{name}", source, low[:160])
