"""`hie deploy`: what a county's IT team needs to stand the exchange up on its own hosts.

``hie deploy certs`` makes a private CA and a certificate per server for a lab or a first
installation (production brings its own; see deploy/README.md)."""

from __future__ import annotations

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
