"""brtrace's command line: flags -> Config -> a view. The only place that turns
errors into exit codes; every error is one line that says what to do."""

from __future__ import annotations

import functools
import sys

import click

from tracer.config import Config
from tracer.errors import BrtraceError
from tracer.incident.store import DEFAULT_ROOT
from tracer.version import VERSION

MAX_INTERVAL = 3600.0
MAX_DURATION = 7 * 24 * 3600.0


def _positive(limit):
    def check(_ctx, param, value):
        if value is not None and not (0 < value <= limit):
            raise click.BadParameter(f"must be > 0 and <= {limit:g} seconds, got {value:g}",
                                     param_hint=f"--{param.name}")
        return value
    return check


def bridge_options(fn):
    """Options every bridge view shares."""
    @click.option("--bridge", "-b", required=True, metavar="NAME", help="Bridge to trace, e.g. br-int.")
    @click.option("--netns", "-n", metavar="NS", default=None,
                  help="Network namespace of the bridge: a name from `ip netns list` or a path.")
    @click.option("--interval", "-i", type=float, default=2.0, show_default=True,
                  callback=_positive(MAX_INTERVAL), help="Seconds between refreshes.")
    @click.option("--duration", "-d", type=float, default=None, callback=_positive(MAX_DURATION),
                  help="Stop after this many seconds (default: until Ctrl-C).")
    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table",
                  show_default=True, help="table for people, json for one object per line.")
    @click.option("--ready-file", hidden=True, default=None,
                  help="Write this file once every probe is attached (for tests).")
    @functools.wraps(fn)
    def wrapper(**kw):
        return fn(**kw)
    return wrapper


def _config(kw) -> Config:
    return Config(bridge=kw["bridge"], netns=kw["netns"], interval=kw["interval"],
                  duration=kw["duration"], output=kw["output"], ready_file=kw["ready_file"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", "-V", prog_name="brtrace", message="%(prog)s %(version)s")
def cli():
    """brtrace: where and why a Linux bridge drops or loops frames.

    \b
    Examples:
      brtrace drops --bridge br-int
      brtrace drops --bridge br0 --netns lab --duration 10 -o json
      brtrace loops --bridge br-int
      brtrace incidents
      brtrace doctor
    """


@cli.command()
@bridge_options
def drops(**kw):
    """Frames freed on the bridge and its ports: port, kernel reason, location.

    \b
    Examples:
      brtrace drops --bridge br-int
      brtrace drops -b br-int -d 30 -o json > drops.jsonl
    """
    from tracer.views.drops import run_drops  # noqa: PLC0415 - a verb imports its view only
    sys.exit(run_drops(_config(kw)))


@cli.command()
@bridge_options
def loops(**kw):
    """Loops, reflecting ports, own-address echoes, MAC flapping and storms.

    \b
    Examples:
      brtrace loops --bridge br-int
      brtrace loops -b br-int -d 10 -o json
    """
    from tracer.views.loops import run_loops  # noqa: PLC0415 - a verb imports its view only
    sys.exit(run_loops(_config(kw)))


@cli.command()
@bridge_options
def top(**kw):
    """Live full-screen view: per-port rates, drops, MAC moves, echoes, findings.

    \b
    Keys: q quit, s sort, p pause, j/k or arrows select, d/Enter drill into a port.
    Without a terminal it prints a plain table every interval.
    Example:
      brtrace top --bridge br-int
    """
    from tracer.views.top import run_top  # noqa: PLC0415 - a verb imports its view only
    sys.exit(run_top(_config(kw)))


@cli.command()
@bridge_options
@click.option("--all-netns", is_flag=True, default=False,
              help="Watch neighbour entries in every network namespace, not only the bridge's.")
def neigh(all_netns, **kw):
    """ARP and IPv6 neighbour discovery per port and the kernel's neighbour state machine.

    Unanswered requests and solicitations, addresses held twice (two MACs, a
    duplicate address detection probe answered), router advertisements from
    several MACs or reflected, entries going INCOMPLETE -> FAILED.

    \b
    Examples:
      brtrace neigh --bridge br-int
      brtrace neigh -b br-int --all-netns -d 30 -o json
    """
    from tracer.views.neigh import run_neigh  # noqa: PLC0415 - a verb imports its view only
    sys.exit(run_neigh(_config(kw), all_netns=all_netns))


def served_options(verb: str):
    """The options of the long-running views (export, watch): bridges, their
    namespace, where /metrics is served."""
    def wrap(f):
        for opt in reversed((
                click.option("--bridge", "-b", "bridges", required=True, multiple=True, metavar="NAME",
                             help=f"Bridge to {verb} (repeat for several, all in one namespace)."),
                click.option("--netns", "-n", metavar="NS", default=None, help="Network namespace of the bridges."),
                click.option("--listen", "-l", default="127.0.0.1:9435", show_default=True, metavar="ADDR:PORT",
                             help="Where to serve /metrics; loopback unless you choose otherwise."))):
            f = opt(f)
        return f
    return wrap


@cli.command()
@served_options("export")
@click.option("--interval", "-i", type=float, default=2.0, show_default=True,
              callback=_positive(MAX_INTERVAL), help="Seconds between topology/findings refreshes.")
@click.option("--duration", "-d", type=float, default=None, callback=_positive(MAX_DURATION),
              help="Stop after this many seconds (default: run until stopped).")
@click.option("--ready-file", hidden=True, default=None)
def export(bridges, netns, listen, interval, duration, ready_file):
    """Serve Prometheus metrics for one or more bridges.

    \b
    Examples:
      brtrace export --bridge br-int
      brtrace export -b br-int -b br-ext --listen 127.0.0.1:9435
    """
    from tracer.views.export import run_export  # noqa: PLC0415 - a verb imports its view only
    cfg = Config(bridge=bridges[0], netns=netns, interval=interval, duration=duration,
                 ready_file=ready_file)
    sys.exit(run_export(cfg, list(dict.fromkeys(bridges)), listen))


@cli.command()
@served_options("watch")
@click.option("--dir", "incident_dir", default="/var/lib/brtrace/incidents", show_default=True, metavar="DIR",
              help="Where incident bundles are written (created 0700; bundles hold MACs and IPs).")
@click.option("--on-incident", metavar="CMD", default=None,
              help="Run CMD (/bin/sh -c) when an incident opens, with BRTRACE_INCIDENT_DIR, _ID, _TYPE, "
                   "BRTRACE_BRIDGE, BRTRACE_NETNS and BRTRACE_PORTS set; its output goes into the bundle.")
@click.option("--on-close", is_flag=True, default=False,
              help="Also run the --on-incident command when the incident closes (BRTRACE_INCIDENT_EVENT=close).")
@click.option("--command-timeout", type=float, default=30.0, show_default=True, callback=_positive(3600),
              help="Seconds before the --on-incident command (and what it started) is killed.")
@click.option("--quiet", type=float, default=60.0, show_default=True, callback=_positive(86400),
              help="Seconds without symptoms after which an incident closes and detail disarms.")
@click.option("--max-bundles", type=click.IntRange(min=1), default=50, show_default=True,
              help="Bundles kept; the oldest closed one goes first.")
@click.option("--max-size", type=click.IntRange(min=1), default=512, show_default=True, metavar="MiB",
              help="Total size of the bundles kept.")
@click.option("--bundle-size", type=click.IntRange(min=1), default=64, show_default=True, metavar="MiB",
              help="Size at which one bundle stops growing (capture, timeline, kernel log).")
@click.option("--max-per-hour", type=click.IntRange(min=1), default=6, show_default=True,
              help="Incidents recorded per hour at most; more are counted, not recorded.")
@click.option("--duration", "-d", type=float, default=None, callback=_positive(MAX_DURATION),
              help="Stop after this many seconds (default: run until stopped).")
@click.option("--ready-file", hidden=True, default=None)
# scripts/bench: what each tier costs on the same traffic (auto: symptoms decide)
@click.option("--detail", "detail_mode", type=click.Choice(["auto", "armed", "disarmed"]), default="auto",
              hidden=True)
def watch(bridges, netns, incident_dir, listen, on_incident, on_close, command_timeout, quiet, max_bundles,
          max_size, bundle_size, max_per_hour, duration, ready_file, detail_mode):
    """Always on: metrics, detail armed by symptoms, an incident bundle per episode.

    \b
    Cheap until something is wrong: drops, MAC moves, interface counters and
    the kernel log run all the time; a symptom arms the per-frame detail
    (loop fingerprints, ARP tables) within a second. A critical finding opens
    an incident: DIR/<time>-<bridge>-<type>/ with incident.json, the
    per-second timeline from 10 minutes before, a pcapng of the ports
    involved, FDB/neighbour snapshots and the kernel log.
    Examples:
      brtrace watch --bridge br-int
      brtrace watch -b br-int --on-incident 'pkill -INT -x tincd' --on-close
      brtrace incidents
    """
    from tracer.views.watch import WatchOptions, run_watch  # noqa: PLC0415 - a verb imports its view only
    cfg = Config(bridge=bridges[0], netns=netns, interval=1.0, duration=duration, ready_file=ready_file)
    opts = WatchOptions(dir=incident_dir, quiet=quiet, on_incident=on_incident, on_close=on_close,
                        command_timeout=command_timeout, max_bundles=max_bundles, max_total_mb=max_size,
                        bundle_mb=bundle_size, max_per_hour=max_per_hour, detail=detail_mode)
    sys.exit(run_watch(cfg, list(dict.fromkeys(bridges)), listen, opts))


@cli.command()
@bridge_options
@click.option("--count", "-c", type=click.IntRange(min=1), default=None,
              help="Stop after this many complete journeys.")
@click.option("--snaplen", "-s", type=click.IntRange(0, 128), default=96, show_default=True,
              help="Bytes of each frame kept per step (pcapng and decoding).")
@click.option("--pcap", "-w", "pcap_path", metavar="FILE", default=None,
              help="Also write every step to this pcapng file (one interface per port, a comment per packet).")
@click.option("--mac", metavar="MAC", default=None, help="Only frames from or to this MAC.")
@click.option("--ip", metavar="IP", default=None,
              help="Only frames from or to this IPv4 or IPv6 address (ARP sender/target and "
                   "IPv6 neighbour solicitation/advertisement target included).")
@click.option("--arp", is_flag=True, default=False, help="Only ARP frames.")
@click.option("--vlan", type=click.IntRange(1, 4094), default=None, help="Only frames of this VLAN.")
@click.option("--proto", metavar="PROTO", default=None,
              help="Only this ethertype (arp, ipv4, ipv6, 0x88b5, ...) or icmp / icmpv6.")
@click.option("--port", metavar="PORT", default=None,
              help="Only frames entering or leaving by this port (or the bridge itself).")
@click.option("--rate", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Steps recorded per second and CPU; beyond it they are counted, not recorded.")
def trace(count, snaplen, pcap_path, mac, ip, arp, vlan, proto, port, rate, **kw):
    """Each frame's journey: entered port X, forwarded/flooded/delivered/suppressed/dropped, left via Y.

    \b
    Filters run in the kernel, before anything is recorded.
    Examples:
      brtrace trace --bridge br-int --mac 52:54:00:12:34:56 --count 10
      brtrace trace -b br-int --arp --ip 10.0.0.5 -w arp.pcapng
      brtrace trace -b br-int --port vnet3 -d 30 -o json
      brtrace trace -b br-int --proto icmpv6 --ip 2001:db8::1
    """
    from tracer.views.trace import Filters, parse_proto, run_trace  # noqa: PLC0415 - a verb imports its view only
    ethertype, ip_proto = parse_proto(proto) if proto else (None, None)
    filters = Filters(mac=mac, ip=ip, arp=arp, vlan=vlan, proto=ethertype, ip_proto=ip_proto,
                      port=port)
    sys.exit(run_trace(_config(kw), filters, count, snaplen, pcap_path, rate=rate))


@cli.command()
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table")
def doctor(output):
    """What this kernel offers and which probe each hook uses.

    \b
    Example:
      brtrace doctor
    """
    from tracer.views.doctor import run_doctor  # noqa: PLC0415 - a verb imports its view only
    sys.exit(run_doctor(output))


def incident_options(fn):
    """Options `incidents` and `incidents show` share; given to either, they count."""
    @click.option("--dir", "directory", metavar="DIR", default=None,
                  help=f"Directory brtrace watch writes incident bundles to (default {DEFAULT_ROOT}).")
    @click.option("--output", "-o", type=click.Choice(["table", "json"]), default=None,
                  help="table for people (default), json for one object per line.")
    @click.option("--json", "as_json", is_flag=True, default=False, help="Same as -o json.")
    @functools.wraps(fn)
    def wrapper(**kw):
        return fn(**kw)
    return wrapper


def _incident_args(ctx, directory, output, as_json) -> tuple:
    """(directory, JSON?) from the command's options, else its group's."""
    parent = ctx.parent.params if ctx.parent and ctx.parent.command.name == "incidents" else {}
    directory = directory or parent.get("directory") or DEFAULT_ROOT
    output = output or parent.get("output") or "table"
    return directory, as_json or parent.get("as_json", False) or output == "json"


@cli.group(invoke_without_command=True)
@incident_options
@click.pass_context
def incidents(ctx, directory, output, as_json):
    """Incident bundles recorded by brtrace watch: list them, or show one.

    Each bundle is a directory DIR/<UTC time>-<bridge>-<type>/ holding
    incident.json, the per-second timeline, the capture, the kernel log and
    the snapshots. `brtrace incidents` lists them, newest last; `brtrace
    incidents show ID` prints one (its ID or the start of it) with its
    findings and files.

    \b
    Examples:
      brtrace incidents
      brtrace incidents --dir /srv/brtrace/incidents -o json
      brtrace incidents show 20261205T234221Z-br-int-l2_loop
    """
    if ctx.invoked_subcommand is None:
        from tracer.views.incidents import run_incidents  # noqa: PLC0415 - a verb imports its view only
        sys.exit(run_incidents(*_incident_args(ctx, directory, output, as_json)))


@incidents.command("show")
@click.argument("incident_id", metavar="ID")
@incident_options
@click.pass_context
def incidents_show(ctx, incident_id, directory, output, as_json):
    """One incident: findings, verdict, open and close times, files.

    \b
    Examples:
      brtrace incidents show 20261205T234221Z-br-int-l2_loop
      brtrace incidents show 20261205T2342 --json
    """
    from tracer.views.incidents import run_incident_show  # noqa: PLC0415 - a verb imports its view only
    directory, json_out = _incident_args(ctx, directory, output, as_json)
    sys.exit(run_incident_show(directory, incident_id, json_out))


def main(argv=None) -> None:
    """Entry point: one-line errors, no tracebacks, meaningful exit codes."""
    try:
        cli.main(args=argv, prog_name="brtrace", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        cmd = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else ""
        print(f"brtrace: error: {exc.format_message()} (see: brtrace{cmd} --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except BrtraceError as exc:
        print(f"brtrace: error: {exc.oneline()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
