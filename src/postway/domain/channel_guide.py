"""What each channel means for the recipient and the sender, in plain words (shown at the
point of choice in the web app and returned by the API)."""

from __future__ import annotations

from postway.domain.states import ChannelName

GUIDE: dict[ChannelName, dict[str, str]] = {
    ChannelName.MANAGED: {
        "title": "Postway's mail servers (default)",
        "from": "Recipients see the address of the identity you send as.",
        "via": 'Some mail apps may show "via" Postway\'s domain next to your name, because the '
        "mail is signed and returned under Postway's domain, not yours.",
        "bounces": "Every bounce and failed delivery is captured and listed under Failed "
        "Deliveries in Conversations.",
        "sent_copy": "No copy is put in your own mailbox's Sent folder.",
        "dmarc": "Postway's servers do not publish DMARC alignment for your domain and cannot "
        "be allow-listed by it, unless your domain is authenticated (a DKIM key and return "
        "path published in your DNS).",
    },
    ChannelName.GMAIL: {
        "title": "Your Gmail account",
        "from": "Recipients see the address of your one connected Gmail account (an identity "
        "that is one of that account's verified send-as aliases keeps its own address).",
        "via": 'No "via" tag: the mail comes from Google\'s servers for your domain.',
        "bounces": "Bounces arrive in your Gmail inbox. Connect with bounce scanning and "
        "Postway reads them there (never changing your mailbox) and lists them under Failed "
        "Deliveries; without it they are not captured.",
        "sent_copy": "A copy is filed in Gmail's Sent folder.",
        "dmarc": "Your company domain's own reputation and DMARC apply.",
    },
    ChannelName.SMTP: {
        "title": "Your own SMTP server",
        "from": "Recipients see your identity's address (your server may rewrite it).",
        "via": 'No "via" tag: the mail leaves from your own server.',
        "bounces": "Rejections your server reports while sending are shown under Failed "
        "Deliveries; later bounces go to your server's mailbox, and Postway finds them there "
        "if you give it that mailbox over IMAP (read-only).",
        "sent_copy": "No copy in your Sent folder unless your server files one.",
        "dmarc": "Your own server's authentication (SPF, DKIM, DMARC) applies.",
    },
}


def explain(channel: ChannelName) -> str:
    g = GUIDE[channel]
    return " ".join(g[k] for k in ("from", "via", "bounces", "sent_copy", "dmarc"))
