"""Kamailio as registrar/proxy and dialog-state presence server (RFC 4235), for busy-lamp and "available
agent" tests: calls through the proxy make it publish each local user's dialog state (dialog, pua,
pua_dialoginfo) to itself, and it answers SUBSCRIBEs with ``Event: dialog`` (presence,
presence_dialoginfo). Everything is kept in memory; presence and pua still need their db_text tables.
Debian's ``kamailio-presence-modules`` (tests/setup.sh installs it).
"""

from __future__ import annotations

from pathlib import Path

from tests.peers.kamailio import Kamailio

TEMPLATE = Path(__file__).with_name("templates") / "kamailio_blf.cfg"
DBTEXT_SCHEMA = Path("/usr/share/kamailio/dbtext/kamailio")
#: Table versions Kamailio 5.6 checks at start (/usr/share/kamailio/dbtext/kamailio/version).
PRESENCE_TABLES = {"presentity": 5, "active_watchers": 12, "watchers": 3, "xcap": 4, "pua": 7, "dialog": 7,
                   "dialog_vars": 1}


class BlfKamailio(Kamailio):
    """The test Kamailio with the presence modules. ``max_expires`` bounds a subscription's life (and so how
    long a watcher stays blind after a restart, which forgets the in-memory subscriptions)."""

    template = TEMPLATE

    def __init__(self, workdir: Path, *args, max_expires: int = 300, **kwargs) -> None:
        super().__init__(workdir, *args, **kwargs)
        self.max_expires = max_expires

    def _write_db(self, db_dir: Path) -> None:
        super()._write_db(db_dir)
        versions = ["table_name(string) table_version(int)", "subscriber:7"]
        for table, version in PRESENCE_TABLES.items():
            versions.append(f"{table}:{version}")
            # db_text refuses a row with an empty value in a column not declared null (presentity's
            # "sender" is empty for pua's PUBLISH): every string column is declared null.
            text = (DBTEXT_SCHEMA / table).read_text().replace("(string)", "(string,null)")
            (db_dir / table).write_text(text)
        (db_dir / "version").write_text("\n".join(versions) + "\n")

    def _defines(self) -> list[str]:
        return [*super()._defines(), "#!define AUTH_SUBSCRIBE"]

    def _values(self, db_dir: Path) -> dict[str, str]:
        return {
            **super()._values(db_dir),
            "presence_db_url": f"text://{db_dir}",
            "subs_db_mode": "0",
            "publ_cache": "2",
            "max_expires": str(self.max_expires),
            "force_single_dialog": "0",  # every dialog, parsed by the phone: busy with a second call ringing is busy
            "force_dummy_dialog": "0",
        }
