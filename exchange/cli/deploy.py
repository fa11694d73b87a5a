"""`hie deploy`: what a county's IT team needs to stand the exchange up on its own hosts.

``hie deploy certs`` makes a private CA and a certificate per server for a lab or a first
installation (production brings its own; see deploy/README.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from exchange.servers.certs import CountyCA


@click.group("deploy")
def deploy_group() -> None:
    """set up the exchange's servers on a county's hosts"""


@deploy_group.command("certs")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder for ca.crt/ca.key and each server's NAME.crt/NAME.key",
)
@click.option("--county", default="demo", show_default=True, help="named in every certificate")
@click.option(
    "--server",
    "servers",
    multiple=True,
    metavar="NAME=HOST[,HOST...]",
    help="a server and the names/addresses clients reach it by, e.g. "
    "nats-1=nats-1.hie.county.lan,10.0.0.11 (repeat for each server)",
)
def certs_command(out: Path, county: str, servers: tuple[str, ...]) -> None:
    """make (or reuse) the county's CA in OUT and a certificate for each --server"""
    wanted: list[tuple[str, list[str]]] = []
    for spec in servers:
        name, _, hosts = spec.partition("=")
        host_list = [h.strip() for h in hosts.split(",") if h.strip()]
        if not name or not host_list or "/" in name:
            raise click.BadParameter(
                f"{spec!r}: expected NAME=HOST[,HOST...], e.g. nats-1=10.0.0.11",
                param_hint="--server",
            )
        wanted.append((name, host_list))
    ca = CountyCA(out, county)
    click.echo(f"CA: {ca.cert_path} (keep {out / 'ca.key'} offline once servers are issued)")
    for server, names in wanted:
        issued = ca.issue(server, names, client=True)
        click.echo(f"{server}: {issued.cert} for {', '.join(names)}")


@deploy_group.command("nats-accounts")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder for accounts.conf (every NATS node includes it) and the exchange's and "
    "the witnesses' credentials",
)
@click.option(
    "--resolver-dir",
    default="/var/lib/nats/jwt",
    show_default=True,
    help="where each node keeps the accounts it was sent",
)
@click.pass_context
def nats_accounts_command(ctx: click.Context, out: Path, resolver_dir: str) -> None:
    """make (or reuse) the consortium's NATS operator and account, and write accounts.conf,
    exchange.creds and witness.creds to OUT"""
    from exchange.cli.common import settings_of
    from exchange.private_files import write_private
    from exchange.servers.nats_accounts import AUTHORITY_DIR, NatsAuthority

    settings = settings_of(ctx)
    authority = NatsAuthority(settings.data_dir / AUTHORITY_DIR, settings.consortium)
    out.mkdir(parents=True, exist_ok=True)
    (out / "accounts.conf").write_text(authority.server_config(Path(resolver_dir)))
    write_private(out / "exchange.creds", authority.service_creds())
    write_private(out / "witness.creds", authority.witness_creds())
    click.echo(
        f"{out / 'accounts.conf'}: include it in every NATS node's configuration\n"
        f"{out / 'exchange.creds'}: the exchange's own user (HIE_NATS_CREDS for `hie up` and "
        "`hie gateway`)\n"
        f"{out / 'witness.creds'}: for audit witnesses (reads the signed heads only)\n"
        f"the keys that sign them stay in {settings.data_dir / AUTHORITY_DIR}: back them up "
        "with the exchange's secrets; members' credentials come from `hie institution add`"
    )


@deploy_group.command("local")
@click.option(
    "--dir",
    "root",
    default=".hie-local",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where everything lives (made if missing)",
)
@click.option("--gateways", default=2, show_default=True, help="gateway processes beside hie up")
@click.option("--demo", is_flag=True, help="seed the demo county (hie demo rather than hie up)")
@click.option(
    "--isolated",
    is_flag=True,
    help="each NATS node in a network namespace of its own, as separate hosts (needs root)",
)
def local_command(root: Path, gateways: int, demo: bool, isolated: bool) -> None:
    """the whole production topology on this machine, on loopback: 3 NATS nodes (R3, TLS,
    a user per member), a PostgreSQL primary and synchronous standby (TLS), hie up with
    gateways (HTTPS); Ctrl-C stops it all"""
    import signal

    from exchange.servers.local_topology import LocalTopology

    topology = LocalTopology(root.resolve(), gateways=gateways, isolated=isolated)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        click.echo("starting 3 NATS nodes and a PostgreSQL primary with its standby ...")
        env = topology.start_servers()
        click.echo(f"NATS: {env['HIE_NATS_URL']}")
        click.echo("starting the exchange (hie " + ("demo" if demo else "up") + ") ...")
        url = topology.start_exchange("demo" if demo else "up", timeout=300)
        click.echo(
            f"exchange ready: {url}/fhir/metadata (certificates of {env['HIE_NATS_CA']})\n"
            f"settings for hie commands: . {topology.root / 'env'}\n"
            f"what runs where: {topology.root / 'topology.json'}; Ctrl-C stops everything"
        )
        while not stopping and topology.exchange and topology.exchange.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("stopping ...")
        topology.stop()
        click.echo("stopped")


@deploy_group.command("nats-config")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder for nats-NAME.conf, one per node",
)
@click.option(
    "--node",
    "nodes",
    multiple=True,
    required=True,
    metavar="NAME=HOST",
    help="a node and the address its clients and peers reach it at (repeat: three nodes)",
)
@click.option("--pki", default="/etc/hie/pki", show_default=True, help="certificates' folder")
@click.option(
    "--store", default="/var/lib/nats", show_default=True, help="JetStream store (fast disk)"
)
def nats_config_command(out: Path, nodes: tuple[str, ...], pki: str, store: str) -> None:
    """write each NATS node's configuration: JetStream, cluster routes, TLS on client and
    route links, and the accounts (accounts.conf from `hie deploy nats-accounts`)"""
    from exchange.servers.certs import Issued
    from exchange.servers.nats_cluster import NodeAddress, node_config

    addresses = []
    for spec in nodes:
        name, _, host = spec.partition("=")
        if not name or not host:
            raise click.BadParameter(f"{spec!r}: expected NAME=HOST", param_hint="--node")
        addresses.append(NodeAddress(name, host, 4222, 6222, 8222, 7422))
    out.mkdir(parents=True, exist_ok=True)
    for node in addresses:
        text = node_config(
            node,
            addresses,
            Path(store) / "jetstream",
            tls=Issued(Path(pki) / f"{node.name}.crt", Path(pki) / f"{node.name}.key"),
            ca=Path(pki) / "ca.crt",
            accounts=Path("accounts.conf"),
        )
        (out / f"nats-{node.name}.conf").write_text(text)
        click.echo(f"{out / f'nats-{node.name}.conf'}")
