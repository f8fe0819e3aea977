"""`nwd mail`: read what the embedded stack's SMTP sink received (newest first).

    nwd mail                 # N, time, to, subject of every message
    nwd mail show 1          # the newest message: headers and text
    nwd mail --json          # the list as JSON; `nwd mail show 1 --json` one message

The messages are files in ``$NWD_STATE_DIR/mail/`` (:mod:`nwd.stack.mailsink`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nwd.cli import UserError
from nwd.stack.mailsink import MAIL_DIR, read_mail
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    mail = subparsers.add_parser(
        "mail", help="list the emails the embedded SMTP sink received",
        description="List (newest first) or show the emails the stack's SMTP sink received.",
    )
    mail.add_argument("--json", action="store_true", help="print JSON")
    mail.set_defaults(handler=cmd_list)
    actions = mail.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print one message (1 = the newest)")
    show.add_argument("number", type=int, metavar="N", help="its number in `nwd mail`")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)


def _directory() -> Path:
    return Settings.from_environment().state_dir / MAIL_DIR


def cmd_list(args: argparse.Namespace) -> int:
    mails = read_mail(_directory())
    if args.json:
        print(json.dumps([{"n": n, **m.summary()} for n, m in enumerate(mails, 1)],
                         indent=2, ensure_ascii=False))
        return 0
    if not mails:
        print(f"no mail yet in {_directory()}")
        return 0
    for n, mail in enumerate(mails, 1):
        when = mail.received_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{n:>3}  {when}  {mail.to:<32}  {mail.subject}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    mails = read_mail(_directory())
    if not 1 <= args.number <= len(mails):
        raise UserError(f"no message {args.number}: the sink holds {len(mails)} "
                        "(`nwd mail` lists them, 1 = the newest)")
    mail = mails[args.number - 1]
    if args.json:
        print(json.dumps(mail.as_json(), indent=2, ensure_ascii=False))
        return 0
    for header in ("Date", "From", "To", "Subject", "Message-ID", "Content-Language"):
        if mail.message.get(header) is not None:
            print(f"{header}: {mail.message[header]}")
    print()
    print(mail.body())
    return 0
