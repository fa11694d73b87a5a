"""deploy/ holds what a county installs: its NATS nodes' configurations are exactly what
`hie deploy nats-config` writes for the hosts deploy/README.md names, so the two never drift."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from exchange.cli.main import hie

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NODES = ["nats-1=10.0.0.11", "nats-2=10.0.0.12", "nats-3=10.0.0.13"]


def test_the_nats_configurations_in_deploy_are_what_the_command_writes(tmp_path: Path) -> None:
    args = ["deploy", "nats-config", "--out", str(tmp_path)]
    for node in NODES:
        args += ["--node", node]
    result = CliRunner().invoke(hie, args)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (DEPLOY / "nats").glob("nats-*.conf"))
    for name in written:
        assert (tmp_path / name).read_text() == (DEPLOY / "nats" / name).read_text(), name
    text = (tmp_path / "nats-nats-2.conf").read_text()
    # Each node routes to the other two, over mutual TLS, and includes the accounts.
    assert "nats-route://10.0.0.11:6222" in text and "nats-route://10.0.0.13:6222" in text
    assert "nats-route://10.0.0.12:6222" not in text
    assert "verify: true" in text and 'include "accounts.conf"' in text
    assert 'sync_interval: "2m"' in text
    # The hub's JetStream domain, and the leaf port the clinics' edge nodes reach over TLS.
    assert "domain: hub" in text
    leaf = text[text.index("leafnodes {") :]
    assert "listen: 10.0.0.12:7422" in leaf and 'ca_file: "/etc/hie/pki/ca.crt"' in leaf
