"""Observability commands: `ferryman dashboards export`, `ferryman alerts export`, `ferryman drift check`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ferryman.cli import main as cli

if TYPE_CHECKING:
    import numpy as np

    from ferryman.alerts import SloConfig
    from ferryman.engine import OnnxModel
    from ferryman.protocol.tensor import InferRequest, InferResponse


def _dashboards_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ferryman import dashboards
    from ferryman.dashboards.grafana import queries

    paths = dashboards.export(args.directory, slo_config=_slo(args))
    table = Table(title=f"Grafana dashboards in {args.directory}")
    for column in ("file", "title", "panels", "queries"):
        table.add_column(column, justify="right" if column in ("panels", "queries") else "left")
    built = dashboards.build(_slo(args))
    for path in paths:
        doc = built[path.name]
        panels = [p for p in doc["panels"] if p["type"] != "row"]
        table.add_row(str(path), doc["title"], str(len(panels)), str(len(queries(doc))))
    cli.console.print(table)
    return 0


def _alerts_export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ferryman import alerts

    kinds = ("rules", "prometheusrule") if args.format == "both" else (args.format,)
    slo = _slo(args)
    paths = alerts.export(args.directory, slo=slo, kinds=kinds)
    table = Table(title=f"Prometheus rules in {args.directory}")
    table.add_column("alert")
    table.add_column("severity")
    table.add_column("for", justify="right")
    for group in alerts.rules(slo)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                table.add_row(rule["alert"], rule["labels"]["severity"], rule.get("for", "-"))
    cli.console.print(table)
    for path in paths:
        cli.console.print(f"wrote [bold]{path}[/]")
    return 0


def _slo(args: argparse.Namespace) -> SloConfig:
    from ferryman.alerts import SloConfig

    return SloConfig(
        latency_seconds=args.latency_ms / 1000.0,
        latency_objective=args.objective,
        max_error_ratio=args.max_error_ratio,
    )


def _drift_check(args: argparse.Namespace) -> int:
    """Offline: compare a file of rows with a version's reference data using the live monitor's engine."""
    import numpy as np
    from rich.table import Table

    from ferryman.dataplane import repository_for
    from ferryman.drift import DriftConfig, load_reference, monitor_for_deployment
    from ferryman.errors import FerrymanError
    from ferryman.spec import load_deployment

    md = load_deployment(args.spec)
    version = args.version or md.spec.traffic.stable or md.spec.versions[0].name
    with cli.console.status("loading models and reference data"):
        repo = repository_for(md, progress=False)
        config = DriftConfig.from_spec(
            md.spec.drift, isolation="thread", engine=args.engine, window_size=1_000_000, min_rows=2
        )
        monitor = monitor_for_deployment(md, repo, config=config)
    if monitor is None or version not in monitor:
        raise FerrymanError(f"version {version!r} has no reference data (or drift is disabled in the spec)")
    rows, _names = load_reference(args.data, max_rows=1_000_000)
    model = repo.get(md.name, version)
    feed = {model.signature.inputs[0].name: rows.astype(np.float32)}
    monitor.observe_request(version, _request(feed), _response(model, feed))
    with cli.console.status(f"running Evidently ({args.engine}) on {rows.shape[0]} rows"):
        report = monitor.run_now(version)
    if report.error:
        raise FerrymanError(f"drift computation failed: {report.error}")
    table = Table(
        title=f"drift of {args.data} vs {md.name}/{version} reference ({report.reference_rows} rows)"
    )
    for column in ("feature", "method", "score", "threshold", "drifted"):
        table.add_column(column, justify="right" if column in ("score", "threshold") else "left")
    for f in report.features:
        table.add_row(
            f.name, f.method, f"{f.score:.4g}", f"{f.threshold:g}", "[red]yes[/]" if f.drifted else "no"
        )
    cli.console.print(table)
    verdict = "[red]DRIFTED[/]" if report.drifted else "[green]no dataset drift[/]"
    cli.console.print(f"drift share {report.share:.3f} (threshold {report.threshold:g}): {verdict}")
    if report.prediction is not None:
        p = report.prediction
        cli.console.print(
            f"prediction drift ({p.kind}, {p.method}): score {p.score:.4g}, "
            f"{'drifted' if p.drifted else 'not drifted'}"
        )
    return 1 if report.drifted and args.fail_on_drift else 0


def _request(feed: dict[str, np.ndarray]) -> InferRequest:
    from ferryman.protocol.tensor import InferRequest, Tensor

    ((name, data),) = feed.items()
    return InferRequest(inputs=[Tensor(name=name, datatype="FP32", shape=list(data.shape), data=data)])


def _response(model: OnnxModel, feed: dict[str, np.ndarray]) -> InferResponse:
    from ferryman.protocol.tensor import InferResponse, Tensor

    outputs = model.run(feed)
    return InferResponse(
        model_name=model.name,
        model_version=model.version,
        outputs=[Tensor(name=n, datatype="", shape=list(a.shape), data=a) for n, a in outputs.items()],
    )


def register(sub: argparse._SubParsersAction) -> None:
    def slo_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--latency-ms", type=float, default=100.0, help="latency SLO threshold (a bucket bound)"
        )
        p.add_argument("--objective", type=float, default=0.99, help="share of requests within the threshold")
        p.add_argument("--max-error-ratio", type=float, default=0.01)

    d = sub.add_parser("dashboards", help="Grafana dashboards").add_subparsers(
        dest="dashboards_command", required=True
    )
    p = d.add_parser("export", help="write the Grafana dashboards (JSON) into DIR")
    p.add_argument("directory", type=Path)
    slo_options(p)
    p.set_defaults(func=_dashboards_export)

    a = sub.add_parser("alerts", help="Prometheus alert rules").add_subparsers(
        dest="alerts_command", required=True
    )
    p = a.add_parser("export", help="write the Prometheus rules file and/or PrometheusRule into DIR")
    p.add_argument("directory", type=Path)
    p.add_argument("--format", choices=("rules", "prometheusrule", "both"), default="both")
    slo_options(p)
    p.set_defaults(func=_alerts_export)

    dr = sub.add_parser("drift", help="drift monitoring").add_subparsers(dest="drift_command", required=True)
    p = dr.add_parser("check", help="compare a .npy/.csv of rows with a version's reference data (Evidently)")
    p.add_argument("spec", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--version", default=None, help="default: the stable version")
    p.add_argument("--engine", choices=("stattest", "preset"), default="stattest")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when the data drifted")
    p.set_defaults(func=_drift_check)


cli.EXTENSIONS.append(register)
