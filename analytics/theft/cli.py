"""``releve theft …``: rank suspects, show stored lists, record inspection outcomes, report hit rates."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analytics.theft import DEFAULT_DAYS, DEFAULT_KEEP, DEFAULT_ORDER
from analytics.theft.evidence import SIGNALS
from releve.cli import db_url
from releve.settings import Settings

if TYPE_CHECKING:  # the signals are imported only by a command that ranks
    from analytics.theft.features import Progress


def register(sub: Any) -> None:
    """Add ``releve theft`` and its subcommands to the ``releve`` parser."""
    p_theft = sub.add_parser(
        "theft", help="theft and non-technical-loss detection: ranked inspection lists (see docs/theft.md)"
    )
    theft = p_theft.add_subparsers(dest="theft_command", metavar="ACTION", required=True)

    p = theft.add_parser(
        "rank",
        help="rank meters by theft risk, from the database (run stored) or from a CSV file",
        description="Without --input: rank from the database (validated series, events, areas, VEE), store "
        "the run and print its id. With --input: rank a CSV file (long: meter,timestamp,value; wide: "
        "CONS_NO,FLAG,<day>...) without touching the database.",
    )
    p.add_argument("--input", type=Path, help="consumption CSV file (default: the database)")
    p.add_argument("--format", choices=("long", "wide"), default="long", help="layout of --input (default long)")
    p.add_argument("--areas", type=Path, help="CSV meter,area[,customer_class,commodity,latitude,longitude]")
    p.add_argument(
        "--feeders",
        type=Path,
        help="CSV area,date|timestamp,value[,technical_loss_pct]: feeder totals "
        "at any resolution (hourly or finer adds the interval balance)",
    )
    p.add_argument(
        "--columns",
        help="map the documented column names to your file's: "
        "meter=LCLid,timestamp=tstp,value=energy(kWh/hh) (wide: meter=…,flag=…)",
    )
    p.add_argument(
        "--stamps",
        choices=("start", "end"),
        default="start",
        help="interval time stamps mark the start (default) or the end of the interval",
    )
    p.add_argument(
        "--tz", help="time zone of the days and hours (and of naive time stamps), e.g. Europe/London (default UTC)"
    )
    p.add_argument("--events", type=Path, help="CSV meter,timestamp,kind[,code]: meter events")
    p.add_argument(
        "--from",
        dest="start",
        type=date.fromisoformat,
        help="first day (database; default: --days before the last reading)",
    )
    p.add_argument("--to", dest="end", type=date.fromisoformat, help="day after the last (database)")
    p.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"period length when --from is not given (default {DEFAULT_DAYS}, up to the last complete day)",
    )
    _list_options(p)
    p.add_argument(
        "--keep", type=int, default=DEFAULT_KEEP, help=f"candidates stored with the run (default {DEFAULT_KEEP})"
    )
    p.add_argument(
        "--tariff",
        type=float,
        action="append",
        default=[],
        metavar="PRICE",
        help="price per unit for the expected value: electricity, then water (default 0.20, 2.0)",
    )
    p.add_argument(
        "--currency",
        help="currency of --tariff, printed with the expected values (database default: the bills' currency)",
    )
    p.add_argument(
        "--include-inspected",
        action="store_true",
        help="keep meters that already have an inspection outcome on the list",
    )
    p.add_argument("--no-store", action="store_true", help="database mode: print without storing the run")
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (shown on a terminal while the hourly signals are computed)",
    )
    p.set_defaults(func=cmd_rank)

    p = theft.add_parser("list", help="show a stored run's list (filters, CSV / GeoJSON export)")
    p.add_argument("--run", type=int, required=True, help="run id")
    _list_options(p)
    p.set_defaults(func=cmd_list)

    p = theft.add_parser(
        "outcome",
        help="record what inspections found for meters on a run's list (one, or a file of visits)",
        description="One visit: --run, --meter, --result. Many: --file visits.csv with columns "
        "meter,result[,run,campaign,note,visited_at] (--run / --campaign fill missing cells). Rows that cannot "
        "be recorded are listed on stderr and kept in <file>.rejected.csv; the others are recorded (exit 1 when "
        "any was rejected).",
    )
    p.add_argument("--file", type=Path, help="CSV of visits: meter,result[,run,campaign,note,visited_at]")
    p.add_argument("--run", type=int, help="run id the meter was listed on (default for --file rows)")
    p.add_argument("--meter", help="meter serial")
    p.add_argument("--result", choices=("fraud", "meter_fault", "nothing", "no_access"))
    p.add_argument("--campaign", default="", help="inspection campaign (e.g. 2026-W11-night)")
    p.add_argument("--note", default="", help="free text")
    p.set_defaults(func=cmd_outcome)

    p = theft.add_parser("report", help="hit rate per inspection campaign")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_report)


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top", type=int, default=20, help="candidates to print and export (default 20)")
    p.add_argument("--area", action="append", default=[], help="only this area (repeatable)")
    p.add_argument("--commodity", choices=("electricity", "water"), help="only this commodity")
    p.add_argument("--class", dest="customer_class", help="only this customer class")
    p.add_argument(
        "--signal",
        choices=SIGNALS,
        help="only candidates whose strongest evidence is this",
    )
    p.add_argument(
        "--order",
        choices=("risk", "value"),
        default=DEFAULT_ORDER,
        help=f"rank by risk or by expected value per visit (default {DEFAULT_ORDER})",
    )
    p.add_argument("-o", "--output", type=Path, help="write the list as CSV (coordinates, route order, reasons)")
    p.add_argument("--geojson", type=Path, help="write the list as GeoJSON points")
    p.add_argument("--quiet", action="store_true", help="do not print the list")


def _tariff(values: list[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in zip(("electricity", "water"), values, strict=False):
        out[name] = value
    return out


def _emit(args: argparse.Namespace, cands: list[Any], currency: str = "") -> None:
    from analytics.theft.ranking import format_table, write_csv, write_geojson

    if not args.quiet:
        print(format_table(cands, currency))
    if args.output:
        write_csv(cands, args.output, currency)
        print(f"wrote {len(cands)} candidates to {args.output}", file=sys.stderr)
    if args.geojson:
        write_geojson(cands, args.geojson)
        print(f"wrote {args.geojson}", file=sys.stderr)


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "areas": args.area or None,
        "commodity": args.commodity,
        "customer_class": args.customer_class,
        "signal": args.signal,
    }


@contextlib.contextmanager
def _hourly_bar(args: argparse.Namespace) -> Iterator[Progress]:
    """A progress bar on stderr for the hourly signals (most of a ranking with interval data).

    Shown on a terminal only, and not with ``--no-progress``; it appears when the first group of
    meters is done (a ranking without hourly data never shows it), counts every meter, and is
    gone when the last is, before the list is printed.
    """
    from tqdm import tqdm

    bars: list[tqdm[Any]] = []

    def step(meters: int, of: int) -> None:
        if not bars:
            disable = args.no_progress or not sys.stderr.isatty()
            bars.append(
                tqdm(total=of, desc="hourly signals", unit=" meters", disable=disable, file=sys.stderr, leave=False)
            )
        bars[0].update(meters)
        if bars[0].n >= of:
            bars[0].close()

    try:
        yield step
    finally:
        for bar in bars:
            bar.close()


def cmd_rank(args: argparse.Namespace, settings: Settings) -> int:
    """Rank from a file or from the database."""
    with _hourly_bar(args) as progress:
        return _rank(args, settings, progress)


def _rank(args: argparse.Namespace, settings: Settings, progress: Progress) -> int:
    """:func:`cmd_rank` with its progress bar."""
    from analytics.theft.data import FileOptions, TheftImportError, load_files
    from analytics.theft.ranking import score
    from releve.cli import CommandError

    tariff = _tariff(args.tariff)
    if args.input is not None:
        try:
            options = FileOptions.parse(args.columns, args.stamps, args.tz)
            data = load_files(args.input, args.format, args.areas, args.feeders, args.events, options)
        except (OSError, TheftImportError) as exc:
            raise CommandError(str(exc)) from exc
        ranking = score(data, tariff=tariff, progress=progress)
        cands = ranking.candidates(args.top, by=args.order, **_filters(args))
        _emit(args, cands, args.currency or "")
        print(f"model: {ranking.model_note()}", file=sys.stderr)
        if data.flags is not None and data.flags.any():
            _print_flag_check(ranking, data.flags)
        return 0

    from analytics.theft import store

    # The same ranking whether its inputs come from one server or are gathered from the shards.
    common: dict[str, Any] = {
        "start": args.start,
        "end": args.end,
        "days": args.days,
        "keep": max(args.top, args.keep),
        "order": args.order,
        "filters": _filters(args),
        "tariff": tariff,
        "include_inspected": args.include_inspected,
    }
    try:
        if settings.database.shard_urls:  # sharding by meter: inputs gathered from every shard at once
            from analytics.theft.sharded import rank_shards

            result = rank_shards(
                settings,
                db_url(settings),
                settings.database.shard_urls,
                **common,
                store_run=not args.no_store,
                progress=progress,
            )
        else:
            result = store.rank_database(
                settings, db_url(settings), **common, store=not args.no_store, progress=progress
            )
    except store.StoreError as exc:
        raise CommandError(str(exc)) from exc
    _emit(args, result.candidates[: args.top], result.currency if args.currency is None else args.currency)
    if result.run_id is not None:
        data = result.data
        print(
            f"run {result.run_id}: {len(result.candidates)} candidates stored ({data.n_meters} meters, "
            f"{data.first_day} + {data.n_days} days, model {result.model})"
        )
    print(f"model: {result.note}", file=sys.stderr)
    if result.timings:  # the one-server path times its phases; the sharded one does not (yet)
        words = {"refresh": "refresh", "load": "load", "score": "rank", "store": "store"}
        print(
            "timings: " + ", ".join(f"{words.get(k, k)} {v:.1f} s" for k, v in result.timings.items()), file=sys.stderr
        )
    return 0


def _print_flag_check(ranking: Any, flags: Any) -> None:
    """With a labelled file (SGCC FLAG): precision@k and ROC AUC, for information only."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y = np.asarray(flags) > 0
    k = int(y.sum())
    order = ranking.order()
    auc = roc_auc_score(y, ranking.risk) if 0 < k < len(y) else float("nan")
    print(
        f"FLAG column (not used for ranking): {k} flagged; precision@{k} {y[order[:k]].mean():.3f}; ROC AUC {auc:.3f}",
        file=sys.stderr,
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Show a stored run's list."""
    from analytics.theft import store
    from analytics.theft.ranking import route_order
    from releve.cli import CommandError

    try:
        cands = store.load_candidates(settings, db_url(settings), args.run)
    except store.StoreError as exc:
        raise CommandError(str(exc)) from exc
    f = _filters(args)
    keep = [
        c
        for c in cands
        if (not f["areas"] or c.area in f["areas"])
        and (not f["commodity"] or c.commodity == f["commodity"])
        and (not f["customer_class"] or c.customer_class == f["customer_class"])
        and (not f["signal"] or c.signal == f["signal"])
    ]
    if args.order == "value":
        keep.sort(key=lambda c: -c.expected_value)
    keep = keep[: args.top]
    route_order(keep)
    _emit(args, keep, store.run_currency(settings, db_url(settings), args.run))
    return 0


def cmd_outcome(args: argparse.Namespace, settings: Settings) -> int:
    """Record an inspection outcome."""
    from analytics.theft import store
    from releve.cli import CommandError

    if args.file is not None:
        if args.meter or args.result:
            raise CommandError("--file records many visits: give --meter / --result in the file, not here")
        try:
            rows, bad = store.read_outcomes(args.file, args.run, args.campaign)
            n, rejected = store.record_outcomes(settings, db_url(settings), rows)
        except store.StoreError as exc:
            raise CommandError(str(exc)) from exc
        bad = sorted(bad + rejected, key=lambda b: b.line)
        print(f"{n} outcomes recorded from {args.file}")
        if bad:
            for b in bad:
                print(f"{args.file}:{b.line}: {b.reason}", file=sys.stderr)
            dead = args.file.with_name(args.file.name + ".rejected.csv")
            store.write_rejected(dead, bad)
            print(f"{len(bad)} rows rejected, kept in {dead}", file=sys.stderr)
            return 1
        return 0
    if args.run is None or not args.meter or not args.result:
        raise CommandError("give --run, --meter and --result (or --file visits.csv)")
    try:
        ident = store.record_outcome(
            settings, db_url(settings), args.run, args.meter, args.result, args.campaign, args.note
        )
    except store.StoreError as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"inspection {ident}: meter {args.meter} on run {args.run}: {args.result}"
        + (f" (campaign {args.campaign})" if args.campaign else "")
    )
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Hit rate per campaign (from the read replica when ``database.replica_url`` is set)."""
    from analytics.theft import model as md
    from analytics.theft import store
    from releve.db import connect, reader_role

    with connect(settings.database.replica_url or db_url(settings), role=reader_role(settings)) as conn:
        report = store.campaign_report(conn)
        labels = store.training_labels(conn)
    pos = int(labels.y.sum())
    neg = len(labels.y) - pos
    if pos >= md.MIN_PER_CLASS and neg >= md.MIN_PER_CLASS:
        nxt = f"calibrated logistic regression on {len(labels.y)} outcomes ({pos} fraud, {neg} not)"
    elif pos >= md.MIN_PU_POSITIVES:
        nxt = (
            f"positive-unlabelled logistic regression on {len(labels.y)} outcomes ({pos} fraud, {neg} not; "
            f"{md.MIN_PER_CLASS} of each class for the calibrated one)"
        )
    else:
        some = "1 fraud outcome" if pos == 1 else f"{pos} fraud outcomes"
        nxt = f"evidence rules and isolation forest only ({some}; a model needs {md.MIN_PU_POSITIVES})"
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(f"next ranking: {nxt}")
    if not report:
        print("no inspections recorded")
        return 0
    print(
        f"{'campaign':<20} {'visits':>6} {'fraud':>6} {'fault':>6} {'nothing':>7} {'no_acc':>6} {'hit rate':>8}  "
        f"{'unbilled per fraud':<20} ranked by"
    )
    for r in report:
        hit = "n/a" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.1f} %"
        energy = ", ".join(f"{e:,.0f} {u}" for u, e in (r["energy_per_fraud"] or {}).items()) or "—"
        print(
            f"{r['campaign']:<20} {r['visits']:>6} {r['fraud']:>6} {r['meter_fault']:>6} {r['nothing']:>7} "
            f"{r['no_access']:>6} {hit:>8}  {energy:<20} {', '.join(r['ranked_by'])}"
        )
    return 0
