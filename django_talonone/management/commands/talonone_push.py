"""``manage.py talonone_push``: send due pushes, sweep the outbox, retry dead pushes.

manage.py talonone_push                  # send every due push now, in this process
manage.py talonone_push --sweep          # reclaim abandoned pushes, re-wake overdue ones
manage.py talonone_push --loop           # both, every --interval seconds, until stopped
manage.py talonone_push --retry-dead [--failed] [--key KEY] [--id ID ...]
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_talonone import outbox


class Command(BaseCommand):
    help = (
        "Send the due pushes of the Talon.One outbox in this process; --sweep reclaims pushes "
        "of dead workers and re-wakes lost ones; --loop keeps doing both (inline dispatch's "
        "retry runner); --retry-dead puts dead pushes back in the queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--sweep",
            action="store_true",
            help="Reclaim in-flight pushes older than IN_FLIGHT_TIMEOUT and re-wake overdue keys "
            "(through Celery when DISPATCH is celery), then exit.",
        )
        action.add_argument(
            "--loop",
            action="store_true",
            help="Reclaim and send due pushes every --interval seconds until interrupted.",
        )
        action.add_argument(
            "--retry-dead",
            action="store_true",
            help="Put dead pushes back in the queue with fresh attempts.",
        )
        parser.add_argument(
            "--interval", type=float, default=5.0, help="Seconds between rounds of --loop."
        )
        parser.add_argument(
            "--rounds", type=int, default=0, help="Stop --loop after this many rounds (0: never)."
        )
        parser.add_argument(
            "--failed", action="store_true", help="With --retry-dead: failed pushes too."
        )
        parser.add_argument("--key", help='With --retry-dead: only this key ("session:<id>").')
        parser.add_argument(
            "--id", type=int, action="append", dest="ids", help="With --retry-dead: this push."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if (options["failed"] or options["key"] or options["ids"]) and not options["retry_dead"]:
            raise CommandError("--failed, --key and --id go with --retry-dead.")
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive.")
        if options["retry_dead"]:
            counts = outbox.retry_dead(
                ids=options["ids"], key=options["key"], include_failed=options["failed"]
            )
            self.stdout.write(
                f"{counts['retried']} pushes queued again, {counts['superseded']} superseded "
                "cart updates left as they are."
            )
        elif options["sweep"]:
            counts = outbox.sweep()
            self.stdout.write(
                f"{counts['reclaimed']} reclaimed, {counts['dead']} dead, "
                f"{counts['woken']} keys woken."
            )
        elif options["loop"]:
            self._loop(options["interval"], options["rounds"])
        else:
            self.stdout.write(f"{outbox.process_due()} pushes finished.")

    def _loop(self, interval: float, rounds: int) -> None:
        done = 0
        try:
            while not rounds or done < rounds:
                # Reclaim abandoned rows, then send everything due from this process.
                counts = outbox.sweep(wake=False)
                finished = outbox.process_due()
                if finished or counts["reclaimed"] or counts["dead"]:
                    self.stdout.write(
                        f"{finished} pushes finished, {counts['reclaimed']} reclaimed, "
                        f"{counts['dead']} dead."
                    )
                done += 1
                if not rounds or done < rounds:
                    time.sleep(interval)
        except KeyboardInterrupt:
            self.stdout.write("stopped.")
