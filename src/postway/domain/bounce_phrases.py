"""What mail servers say, per bounce reason: the wording half of the bounce classifier.

Each entry is a set of phrases that remote MTAs, mailbox providers and filters put in their
replies and DSN diagnostics, written from what those systems document and send. Patterns are
matched against lower-cased, whitespace-collapsed text in which email addresses have been
replaced by "<address>" (so a local part like "userunknown@" never decides anything). Pure.
"""

from __future__ import annotations

import re

from postway.domain.regex_anchors import Prefiltered


def _any(*phrases: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in phrases))


_ADDR = r"<address>"
_GAP = r".{0,60}?"  # a few words between two halves of a phrase, bounded to stay linear

PHRASES: dict[str, re.Pattern[str]] = {
    "mailboxfull": _any(
        r"mailbox (?:is |was )?(?:full|over ?quota)", r"over ?quota", r"quota (?:exceeded|full)",
        r"exceeded storage allocation", r"full mailbox", r"mail ?folder is full",
        r"mailbox (?:size limit exceeded|exceeds allowed size|would exceed)",
        r"mailbox\b.{0,40}(?:full|quota)", r"mailbox\b.{0,30}exceeded.{0,30} limit",
        r"(?:account|inbox|user) (?:\S{1,64} )?(?:is )?(?:full|over)\b",
        r"user has (?:exceeded (?:his |her |the )?quota|too many messages)",
        r"account is .{0,40} quota", r"quota violation", r"disk\b.{0,40}quota",
        r"not (?:sufficient|enough) (?:disk |storage )?space", r"enough (?:disk |storage )?space",
        r"no space left on device", r"too much mail data", r"space has been used up",
        r"maildir .{0,20}quota", r"boite du destinataire pleine",
        r"exceeding receiving limits", r"mailbox size"),
    "mesgtoobig": _any(
        r"message (?:is )?too (?:big|large)", r"message size exceeds",
        r"exceeded maximum (?:inbound )?message size", r"(?:mail|message) size (?:limit|too)",
        r"size limit exceeded", r"e?mail (?:is )?too large",
        r"exceeds (?:the )?(?:maximum |fixed maximum )?(?:message )?size",
        r"message exceeds .{0,30}size limit", r"larger than .{0,30}(?:limit|maximum)",
        r"message too long", r"size exceeds .{0,30}(?:maximum|limit)"),
    # RFC 3463 X.2.3 "Message length exceeds administrative limit": a limit the recipient's
    # administrator set, not the system's maximum (X.3.4, mesgtoobig).
    "exceedlimit": _any(r"message header size exceeds", r"message too many recipients",
                        r"exceeds? .{0,20}administrative limit", r"recipient limit"),
    "suspend": _any(
        r"(?:is|been|currently|mailbox|user|account|temporarily) suspended", r"temporary locked",
        r"archived recipient", r"boite du destinataire archivee", r"inactive (?:account|user)",
        r"(?:invalid|inactive)/inactive user", r"invalid/inactive", r"deactivated mailbox",
        r"user is terminated", r"mailbox (?:is )?(?:disabled|frozen)",
        r"mailbox unavailable or access denied", r"temporarily inactive",
        r"recipient suspend", r"account that you tried to reach is (?:disabled|inactive)",
        r"account has been (?:disabled|discontinued|locked)",
        r"address no longer accepts mail", r"this mailbox is disabled",
        r"user or domain is disabled", r"account is locked", r"account (?:is )?disabled"),
    "hasmoved": _any(r"has been replaced by", r"has moved", r"address has changed"),
    "norelaying": _any(
        r"as a relay", r"insecure mail relay", r"permitted to relay", r"no relaying",
        r"not a gateway", r"allowed to relay", r"open relay", r"not local host",
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)", r"unable to relay",
        r"relaying mail to ", r"specified domain is not allowed", r"list of allowed rcpthost",
        r"not configured to relay", r"we don't handle mail for", r"we do not relay",
        r"requires authentication when attempting to send to a non-local"),
    "userunknown": _any(
        r"(?:user|recipient|mailbox|address|addressee|e-?mail address|local.part) "
        r"(?:is )?(?:unknown|not (?:found|known|exist))",
        r"(?:user|recipient|mailbox|address|account) (?:\S{1,64} )?does ?n[o']t exist",
        r"(?:e-?mail )?address (?:could not be found|does not exist|invalid)",
        r"unknown (?:user|recipient|mailbox|address|local.?part|e-?mail|alias)",
        r"no such (?:user|recipient|mailbox|address|person|local user)",
        r"(?:invalid|bad) (?:recipient|mailbox|user|address)\b",
        r"non-?existent (?:user|recipient|mailbox|address)",
        r"(?:user|mailbox|account) " + _GAP + r"(?:does not exist|not found|was not found)",
        r"no (?:mailbox|account) (?:here )?by that name", r"no mailbox (?:found|available)",
        r"not a (?:valid|known|local) (?:user|mailbox|recipient|address)",
        r"is not a (?:valid|known) (?:user|mailbox|recipient)",
        r"recipient ?not ?found", r"badrcptto", r"badrecipientto", r"validrcptto",
        r"mailbox (?:unavailable|unavaiable|invalid|is unavailable|not present|is inactive)",
        r"recipient address rejected: (?:user unknown|unknown user|access denied|invalid"
        r"|userunknown)",
        r"there is no one at this address", r"recipient name is not recognized",
        r"(?:does not|doesn't) have an? .{0,40}account",
        r"account that you tried to reach does not exist", r"no longer valid",
        r"user not (?:active|exist|local)", r"user missing home directory",
        r"unknown in (?:local|virtual|relay) recipient table", r"addressee unknown",
        r"not (?:listed )?in .{0,20}(?:name )?directory", r"can't accept user",
        r"destination addresses were unknown", r"recipient (?:is not local|not ok|not exist)",
        r"recipients? (?:was|were) undeliverable", r"envelope recipient (?:has been denied"
        r"|is in my)", r"" + _ADDR + r" not found", r"utilisateur inconnu",
        r"nessun utente", r"no existe (?:dicha persona|ese usuario)",
        r"keine e-mails empfangen", r"recipient refuses to accept your mail",
        r"user (?:\(\S{1,64}\) )?unknown", r"(?:invalid|unknown) virtual user",
        r"not email addresses", r"no valid recipients",
        # RFC 3463's own text for X.1.1, and the common short forms of "no such mailbox".
        r"bad destination (?:mailbox )?address", r"destination mailbox address invalid",
        r"no such account", r"unknown or illegal alias",
        r"(?:user|recipient|mailbox) invalid", r"undeliverable address",
        r"(?<!sender )(?<!from )(?<!sender's )invalid (?:e-?mail )?address",
        r"is not a valid (?:e-?mail )?address", r"invalid mailbox"),
    "filtered": _any(
        r"message filtered", r"user ?reject", r"rejected due to user rules",
        r"refuses? to (?:receive|accept)", r"refused due to recipient preferences",
        r"only accepting mail from", r"is not accepting any mail", r"account is protected by",
        r"has restricted .{0,20}e-?mail", r"blocked by the recipient", r"bounced address",
        r"not found recipient account", r"user not found"),
    "rejected": _any(
        r"sender (?:address |email address )?(?:rejected|refused|denied|blocked|not allowed"
        r"|verify failed|was rejected|has been blacklisted|is in my black list|is spammer"
        r"|not pre-approved)",
        r"(?:unroutable|invalid|bad|bogus|unknown) (?:sender|mail from)",
        r"sender (?:address |domain )?(?:unknown|does not exist)", r"domain of sender address",
        r"sender domain (?:is empty|must)", r"envelope blocked", r"emetteur invalide",
        r"empty envelope senders", r"null sender is not allowed", r"no third-party dsns",
        r"from: domain is invalid", r"fully qualified email address required",
        r"purported responsible address", r"administrative prohibition", r"batv",
        r"backscatter protection", r"list of senders to accept mail from",
        r"denied \[bouncedeny\]", r"valid-address-filter", r"delivery not authorized",
        r"senderfilterconfig", r"invalid domain, see", r"registered gateway user",
        r"mail from not owned", r"email address is not verified", r"mx records for",
        r"returned mail not accepted", r"recursive cname", r"rule imposed mailbox access",
        r"from a different address or alias", r"spam reporting address",
        r"empty email address", r"this server does not accept mail from",
        r"unsigned dsn", r"not allowed to post to this", r"permission to post",
        r"not a member of this (?:mailing )?list",
        r"address that has been blacklisted", r"e-?mail address has been blacklisted",
        r"access to submit messages to this e-mail system has been rejected",
        r"address rejected", r"send mail as", r"customfromdenied", r"mailfrom domain"),
    "hostunknown": _any(
        r"domain (?:name )?(?:does not exist|is not reachable|must exist|not found)",
        r"host or domain name not found", r"host unknown", r"host unreachable",
        r"unknown (?:host|domain)", r"no such domain", r"name or service not known",
        r"mail domain mentioned in email address is unknown",
        r"account or domain may not exist", r"unroute?able address", r"nxdomain",
        r"couldn't find any host", r"553 .{0,60}does not exist",
        r"\bhost [a-z0-9.-]{1,255} not found"),
    "notcompliantrfc": _any(r"duplicate header", r"not rfc ?5322 compliant",
                            r"rfcmessagenoncompliant", r" multiple .{0,40} headers?\b"),
    "authfailure": _any(
        r"spf\.pobox\.com", r"bad spf records", r"dmarc polic", r"spf (?:check|settings)",
        r"sender policy framework", r"spf \(sender policy framework\)",
        r"required authentication level", r"authentication requirements",
        r"not allowed to send from .{0,60}spf", r"spf (?:validation|record)s? (?:fail|error)",
        r"(?:fail(?:s|ed)?|failure) (?:to pass |of )?(?:the )?(?:spf|dkim|dmarc)\b",
        r"\b(?:spf|dkim|dmarc)(?: check| validation| verification)?[ =:-]{1,3}(?:hard)?fail",
        r"fails to pass authentication checks", r"does not have authentication information",
        r"not allowed to send mail.{0,80}_401",
        r"unauthenticated (?:e-?mail|message)s? from", r"multiple authentication checks failed"),
    "requireptr": _any(
        r"ip name lookup failed", r"ptr record", r"dns ptr", r"cannot find your hostname",
        r"cannot resolve your address", r"reverse dns (?:failed|required|lookup for host)",
        r"(?:must have|fix|custom) (?:a )?reverse dns", r"reverse lookup (?:failed|rejected)",
        r"forward dns entry does not point", r"unresolvable relay host",
        r"generic dns ptr", r"mismatches client ip", r"invalid rdns", r"unverifyable sending ip",
        r"dns lookup failure: .{0,60}try again later",
        # "reverse DNS", "rDNS", "PTR", "reverse lookup": RFC 1912 section 2.1, Google 5.7.25.
        r"(?:no|without|lacks?) (?:a )?(?:reverse dns|rdns|ptr)", r"reverse dns (?:entry|name)",
        r"(?:missing|no|without) ptr", r"rdns (?:required|failed|lookup failed)",
        r"client host .{0,80}(?:no|without) (?:a )?(?:hostname|reverse)"),
    "virusdetected": _any(r"\bvirus", r"malware", r"infected", r"\bworm\b", r"trojan",
                          r"malicious"),
    "spamdetected": _any(
        r" - spam\b", r"help_spam", r"appears to be unsolicited", r"unsolicited bulk",
        r"blacklisted url", r"spam (?:blocked|check|content|detected|email|not accepted"
        r"|refused|rejection|score|message|filter|complaints)",
        r"block for spam", r"no spam please", r"spamassassin", r"detected as spam",
        r"classified as spam", r"identified as (?:spam|a bulk)", r"content filter rejection",
        r"denied due to spam", r"probability of (?:being )?spam", r"high probability of spam",
        r"mail content denied", r"may consider spam", r"considered (?:as )?spam",
        r"contains spam", r"message content rejected", r"looks? like spam", r"seems to be a spam",
        r"spamprofiler", r"rejected (?:as|due to suspected) spam", r"unacceptable content",
        r"message rejected for policy reasons", r"possible spam", r"is spam\b",
        r"probable spam", r"bulk.advertising", r"bulk email", r"banned content",
        r"rejecting mail content", r"spam-like", r"sender domain listed at",
        r"spam filter", r"spambouncer", r"spamming not allowed", r"too much spam",
        r"classification as bulk mail", r"appears to be spam", r"scored as spam",
        r"recurrent pattern detection", r"we dont accept spam", r"similar to spam",
        r"uribl", r"probably spam", r"triggered a spam block", r"spam contents",
        r"antispam checks", r"temporarily blocked by our filter",
        r"mail score \(.{0,20} over", r"rejected by .{0,40}\(spam\)",
        r"rejected due to spam", r"spam points", r"scored too high"),
    "badreputation": _any(r"(?:ip|sender|domain|poor|low|bad) reputation",
                          r"reputation (?:of|is|score)", r"has been temporarily rate limited "
                          r"due to ip reputation"),
    "toomanyconn": _any(r"too many (?:concurrent |simultaneous )?(?:connections|sessions)",
                        r"too many recipients", r"frequency limited", r"connection limit",
                        r"too many smtp sessions", r"has exceeded the max(?:imum)? "
                        r"(?:allowed )?(?:number of )?connections"),
    "speeding": _any(r"rate limit", r"too (?:many|fast) .{0,20}(?:messages|mails?)\b",
                     r"sending rate", r"rate of incoming", r"throttl", r"temporarily deferred "
                     r"due to unexpected volume", r"receiving mail at a rate"),
    "blocked": _any(
        r"block ?list", r"black ?list", r"blocked (?:using|by|-|for)\b", r"was blocked by",
        r"listed (?:in|on|at|by)", r"\brbl\b", r"dnsbl", r"spamhaus", r"spamcop", r"barracuda",
        r"bad sender ip", r"banned sending ip", r"client host .{0,60}(?:rejected|blocked)",
        r"connection (?:refused|rejected|dropped|reset)", r"connection was dropped",
        r"confirm this mail server", r"dynamic ip", r"dynamic/zombied", r"go away",
        r"helo command rejected", r"host network not allowed", r"invalid ip for sending",
        r"not allowed to send mail from", r"no access from mail server",
        r"not currently accepting mail from your ip", r"refused - see http",
        r"sender ip address rejected", r"forbidden by your ip", r"your ip",
        r"service not available, closing transmission channel",
        r"after initial connection", r"suspiciously like spammer", r"user complaints",
        r"too many (?:spams|unwanted messages)", r"you are not allowed to connect",
        r"you are sending spam", r"requires confirmation", r"open proxy",
        r"access from ip address .{0,60}blocked", r"ip .{0,60}(?:is )?blocked",
        r"refused to talk to me", r"mail server at .{0,60}is blocked",
        r"mail from .{0,80} refused", r"ip address .{0,60}(?:rejected|refused|blocked)",
        r"listed as abusive", r"your access ip", r"abuseat\.org",
        r"not accepting connections", r"smtp server of your isp", r"extreme bad ip",
        r"has not passed validation", r"no matches to nameserver query",
        r"domain does not exist:", r"no valid recipients from"),
    "policyviolation": _any(
        r"illegal attachment", r"not accepting mail with", r"members-only list",
        r"closed mailing list", r"denied by policy", r"(?:not accepted|rejected) for policy "
        r"reasons", r"security policies", r"header are not accepted", r"header error",
        r"local policy violation", r"organizational settings", r"low priority",
        r"rejected due to local policy", r"messages with multiple addresses",
        r"protocol violation", r"not subscribed to this group", r"organization policy",
        r"content presents a potential", r"containing images or other attachments",
        r"mass mailer", r"without solving a captcha"),
    "securityerror": _any(
        r"authentication (?:credentials invalid|failure|required|turned on)",
        r"executable files are not allowed", r"insecure mail relay",
        r"you don't authenticate", r"unauthenticated senders not allowed",
        r"verification failure", r"not authorized to (?:send mail|perform ses)",
        r"authentication failed; server", r"authentification (?:invalide|requise)",
        r"is a dead domain", r"account not subscribed to ses", r"must (?:be )?authenticate"),
    "systemfull": _any(r"insufficient system storage", r"system (?:is )?full",
                       r"insufficient disk space",
                       r"mail system full", r"out of (?:disk|memory|storage)"),
    "systemerror": _any(
        r"forwarding loop broken", r"can't create user output file", r"could not load drd",
        r"internal (?:server )?error", r"interrupted system call",
        r"encountered an error while being processed", r"create a mail loop",
        r"local (?:configuration )?error", r"loop was found", r"loops back to myself",
        r"(?:mail )?system config(?:uration)? error", r"server configuration error",
        r"queue file write error", r"there is no mdb", r"misconfigured",
        r"service currently unavailable", r"temporary local problem",
        r"timeout waiting for input", r"transaction failed ", r"unable to connect .{0,40}daemon",
        r"system error", r"local error in processing"),
    "networkerror": _any(
        r"could not connect and send", r"dns records for the destination computer",
        r"hop count exceeded", r"host is unreachable", r"host name lookup failure",
        r"host not found, try again", r"mail forwarding loop",
        r"name server reply",
        r"maximum forwarding loop", r"message looping", r"routing loop", r"no route to host",
        r"too many hops", r"unable to resolve route", r"unrouteable mail domain",
        r"network (?:is )?unreachable"),
    "expired": _any(
        r"connection timed out", r"could not find a gateway for",
        r"delivery attempts will continue", r"delivery (?:time )?expired",
        r"failed to deliver to domain ", r"giving up on", r"failing for a long time",
        r"has been delayed", r"not been collected after", r"message expired",
        r"message timed out", r"retry time not reached", r"server did not respond",
        r"in the queue too long", r"unable to deliver message after multiple retries",
        r"not reachable within the allowed queue period",
        r"could not be delivered for .{0,30}days", r"could not be delivered for more than",
        r"retry timeout exceeded", r"too long in queue", r"queue too long",
        r"could not deliver for the last", r"envelope expired", r"delivery failed \d+ attempts",
        r"did not accept our requests to connect", r"not (?:been )?delivered within",
        r"undeliverable for \d+ (?:days|hours)"),
    "contenterror": _any(
        r"duplicate header", r"header size exceeds maximum", r"8-bit data in message header",
        r"recipient list, exceeds policy limit", r"mime complexity",
        r"too many received: headers", r"invalid mime headers", r"improperly-formatted binary",
        r"unnecessary base64"),
    "notaccept": _any(r"does not accept (?:e-?)?mail", r"null mx", r"doesn't receive e?mail",
                      r"couldn't find a mail exchanger", r"no smtp service",
                      r"host .{0,60}does not accept", r"mail service is not available",
                      r"name server: .{0,60}: host not found", r"no mx\b",
                      r"not accepting .{0,20}(?:network )?messages"),
    "mailererror": _any(r"mailer error", r"command failed", r"exit (?:code|status) \d",
                        r"procmail", r"x-unix", r"pipe to \|", r"\bpermission denied\b",
                        r"command died with status", r"command output:", r"mail\.local",
                        r"(?:bin/|usr/)\S{0,40}: (?:not found|no such file)",
                        r"unknown mailer error"),
    "syntaxerror": _any(r"syntax error", r"command unrecognized", r"command not recognized",
                        r"bad sequence of commands", r"unrecognized command",
                        r"line too long", r"valid rcpt command must precede",
                        r"syntax (?:error|invalid)", r"invalid (?:command )?argument",
                        r"bad (?:command|address) syntax", r"unrecognized (?:command|parameter)"),
    # RFC 4954 (530 5.7.0 Authentication required), RFC 3207 (530 Must issue a STARTTLS
    # command first), RFC 3463 X.7.10/X.7.11 (encryption needed/required).
    "authrequired": _any(
        r"(?:smtp )?auth(?:entication)? (?:is )?required", r"must issue a starttls",
        r"(?:tls|starttls|ssl|encryption|encrypted connection) (?:is )?(?:required|needed"
        r"|mandatory)", r"requires? (?:a )?(?:secure|encrypted|tls) connection",
        r"must (?:use|enable) (?:tls|starttls|encryption)", r"authentication is needed"),
    "accessdenied": _any(r"access denied"),
    # A reply that quotes the recipient before its verdict is an answer to RCPT TO: Sendmail
    # "550 5.1.1 <addr>... User unknown", Postfix smtpd "550 5.1.1 <addr>: Recipient address
    # rejected: ...", Exim/Courier "550 <addr>: ..." (addresses are "<address>" here).
    "rcptquote": _any(r"(?:^|[^\w.])[45]\d\d:?[ -](?:[45]\.\d{1,3}\.\d{1,3} )?"
                      r"<address> ?(?::|\.\.\.)"),
    "vacation": _any(r"i am away", r"out of (?:the )?office", r"on vacation"),
}

# The phrase lists behind a test for the literals each needs (`regex_anchors`): same answers,
# and most texts are turned away by a few substring tests instead of an alternation search.
FAST_PHRASES: dict[str, Prefiltered] = {k: Prefiltered(p) for k, p in PHRASES.items()}
