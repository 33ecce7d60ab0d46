"""The ``magn`` command: ``magn study``, ``magn generate``, ``magn export``, ``magn predict``,
``magn validate``, ``magn doctor``.

Exit status (every subcommand): 0 done; 1 a notebook of the study failed or the disk filled;
2 a usage or configuration error (bad option, profile or ``--set``, a notebook before
``--only``/``--from`` not up to date, the kernel missing, a training that diverged at the
profile's learning rate); 3 an input-data error (manifest, DICOM, mask: the message
names the patient and the file). Output to a closed pipe (``magn config | head -1``) ends
quietly with status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from magn_lib import __version__
from magn_lib.errors import ConfigError, InputError, OutOfSpaceError, UpstreamError

__all__ = [
    "EXIT_INPUT",
    "EXIT_NOTEBOOK_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_NOTEBOOK_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3

EXIT_CODES_HELP = """exit status:
  0  done
  1  a notebook of the study failed (its partial copy is kept; no report is published),
     or the disk filled (the message names the folder and the space)
  2  usage or configuration error (option, profile, --set, notebook selection, kernel,
     a training that diverged at the profile's learning rate)
  3  input-data error (manifest, DICOM series, mask; the message names patient and file)"""

PROFILE_HELP = ("smoke, demo or paper (configs/<name>.yaml), or a YAML file of one's own "
                "listing only what it changes")
# the grid's configurations (magn_lib.cv.CONFIGS; listed here so that `magn --help` does not
# import torch — a test keeps the two in step)
GRID_CONFIGS = (
    "sagittal", "sagittal+attention", "axial", "axial+attention", "coronal",
    "coronal+attention", "multi-view", "multi-view+attention",
)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from magn_lib.repro import check_environment, checkout_mismatch

    versions = check_environment()
    width = max(map(len, versions))
    for dist, version in versions.items():
        print(f"  {dist:<{width}}  {version}")
    print(f"environment OK: {len(versions)} key packages import")
    mismatch = checkout_mismatch()
    if mismatch:
        print(f"warning: {mismatch}", file=sys.stderr)
    return 0


# the execution options of `magn study` / `magn config`: shorthands of --set KEY=VALUE
EXECUTION_FLAGS = ("executor", "ray_address", "gpus_per_task", "cpus_per_task")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    from magn_lib.config import parse_override

    overrides = dict(parse_override(item) for item in args.set or [])
    for key in EXECUTION_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            if key in overrides and overrides[key] != value:
                raise ConfigError(f"{key}: given both as --{key.replace('_', '-')} {value} and "
                                  f"as --set {key}={overrides[key]}")
            overrides[key] = value
    return overrides


def _add_execution_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "execution of the MAGN grid (never changes a result; shorthands of --set)")
    group.add_argument("--executor", choices=("sequential", "ray"), default=None,
                       help="sequential: one training after the other (default); ray: each "
                            "(configuration, fold) a Ray task")
    group.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                       help="join an existing Ray cluster (a head started with `ray start "
                            "--head`); default: a local Ray started for the run")
    group.add_argument("--gpus-per-task", type=float, default=None, metavar="G",
                       help="GPUs of one training, e.g. 0.25: four share a GPU")
    group.add_argument("--cpus-per-task", type=int, default=None, metavar="N",
                       help="CPUs (and torch threads) of one training")


def _cmd_config(args: argparse.Namespace) -> int:
    from magn_lib.config import resolve_parameters

    params = resolve_parameters(args.profile, _overrides(args))
    print(json.dumps(params.profile.to_dict(), indent=2))
    return 0


def _shown_path(path: os.PathLike[str] | str) -> str:
    """``path`` relative to the working folder when inside it, else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _cmd_study(args: argparse.Namespace) -> int:
    from magn_lib.pipeline import run_study
    from magn_lib.progress import format_duration
    from magn_lib.repro import checkout_mismatch

    mismatch = checkout_mismatch()
    if mismatch:
        print(f"magn study: warning: {mismatch}", file=sys.stderr)
    result = run_study(
        profile=args.profile,
        overrides=_overrides(args),
        only=args.only,
        start=getattr(args, "from"),
        stop=args.to,
        manifest_dir=args.manifest,
        run_dir=args.out,
        work_dir=args.work,
        force=args.force,
        kernel_name=args.kernel,
        notebooks_dir=args.notebooks,
        progress=not args.quiet,
    )
    counts = {}
    for run in result.notebooks:
        counts[run.status] = counts.get(run.status, 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    elapsed = format_duration(result.duration_s)
    if not result.succeeded:
        print(f"magn study: {result.error}", file=sys.stderr)
        print(f"magn study: FAILED after {elapsed} ({summary}); no report published "
              f"(run record: {_shown_path(result.paths.run_manifest)})")
        return {"input": EXIT_INPUT, "config": EXIT_USAGE}.get(result.failure,
                                                               EXIT_NOTEBOOK_FAILED)
    if result.complete:
        print(f"magn study: done in {elapsed} ({summary}). "
              f"Report: {_shown_path(result.paths.index_html)}")
    else:
        print(f"magn study: done in {elapsed} ({summary}); the report is not published "
              "because some notebooks are out of date: run them (or drop --only/--to)")
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace) -> int:
    from magn_lib.config import load_profile, resolve_path
    from magn_lib.pipeline import embedded_cohort_dir
    from magn_lib.synthetic import make_cohort

    overrides = {k: v for k, v in (("n_patients", args.n_patients), ("seed", args.seed),
                                   ("separability", args.separability)) if v is not None}
    profile = load_profile(args.profile, **overrides)
    out = resolve_path(args.out) if args.out else embedded_cohort_dir(profile)
    manifest = make_cohort(
        out,
        n_patients=profile.n_patients,
        seed=profile.seed,
        separability=profile.separability,
        n_jobs=profile.n_jobs,
        overwrite=args.overwrite,
    )
    print(f"embedded cohort: {profile.n_patients} patients, seed {profile.seed}; "
          f"manifest at {manifest}")
    return 0


def _cmd_deid_key(args: argparse.Namespace) -> int:
    from magn_lib.ingest import write_deid_key
    from magn_lib.layout import default_run_parents
    from magn_lib.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    key = write_deid_key(manifest, args.out, forbidden=default_run_parents())
    print(f"de-identification key written to {key} (owner-readable only; keep it private)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from magn_lib.bundle import export_bundle, load_bundle

    out = export_bundle(args.run, args.out, config=args.config, work_dir=args.work,
                        target_sensitivity=args.target_sensitivity, overwrite=args.overwrite)
    bundle = load_bundle(out)  # what predict will read: checked once now
    cal = bundle.calibration
    cross = cal.operating_point["cross_validated"]

    def estimate(metric: str) -> str:
        value = cross[metric]["estimate"]
        return "not estimable" if value is None or value != value else f"{value:.2f}"

    print(f"magn export: {bundle.config.name} ({len(bundle.models)} fold models) -> "
          f"{_shown_path(out)}; operating point {cal.threshold:.4g} ({cal.rule}), "
          f"cross-validated sensitivity {estimate('sensitivity')}, "
          f"specificity {estimate('specificity')}")
    if cal.no_signal:
        print("magn export: warning: out of fold the model did not rank multiple myeloma "
              "above metastasis; its calibrated probability is the prevalence for every lesion",
              file=sys.stderr)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from magn_lib.bundle import load_bundle
    from magn_lib.layout import PredictionPaths
    from magn_lib.predict import CaseInput, predict_case, predict_manifest

    bundle = load_bundle(args.model)
    out = args.out
    if args.manifest:
        if args.sagittal or args.mask:
            raise ConfigError("give either --manifest or the series and --mask of one lesion")
        table = predict_manifest(bundle, args.manifest, out, report=not args.no_report,
                                 pdf=args.pdf)
        failed = table[table["status"] != "ok"]
        for row in failed.itertuples():
            print(f"magn predict: lesion {row.lesion_id}: input error: {row.error}",
                  file=sys.stderr)
        print(f"magn predict: {int((table['status'] == 'ok').sum())} of {len(table)} lesions "
              f"scored; table: {_shown_path(PredictionPaths(Path(out)).table)} "
              "(research use only; not a medical device)")
        return EXIT_INPUT if len(failed) else EXIT_OK
    if not (args.sagittal and args.mask and args.lesion_id):
        raise ConfigError("one lesion needs --sagittal, --coronal, --axial, --mask and "
                          "--lesion-id (or give --manifest)")
    series = {view: getattr(args, view) for view in ("sagittal", "coronal", "axial")
              if getattr(args, view)}
    case = CaseInput(lesion_id=args.lesion_id, series=series, mask=args.mask,
                     mask_label=args.mask_label, patient_id=args.patient_id)
    result = predict_case(bundle, case, out, report=not args.no_report, pdf=args.pdf)
    if args.pdf and not str(result.get("case_report_pdf", "")).endswith(".pdf"):
        print(f"magn predict: warning: no PDF: {result.get('case_report_pdf')}",
              file=sys.stderr)
    for row in result["fold_models"]:
        print(f"  fold {row['fold']}: {format_probability(row['probability_calibrated'])} "
              f"(raw {format_probability(row['probability_raw'])})")
    for warning in result["warnings"]:
        print(f"magn predict: warning: {warning}", file=sys.stderr)
    print(f"lesion {result['lesion_id']}: probability of multiple myeloma "
          f"{result['probability_mm_text']} -> {result['call']} (threshold "
          f"{result['threshold']:.4g}); report: "
          f"{_shown_path(Path(out) / result['lesion_id'])} "
          "(research use only; not a medical device)")
    return EXIT_OK


def _interval_text(entry: dict | None) -> str:
    if not entry or entry.get("estimate") is None:
        return "not estimable"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if low is None or high is None:
        return f"{entry['estimate']:.3f}"
    return f"{entry['estimate']:.3f} (95 % CI {low:.3f}-{high:.3f})"


def _cmd_validate(args: argparse.Namespace) -> int:
    from magn_lib.external import load_external, validate_external

    def say(message: str) -> None:
        if not args.quiet:
            print(f"magn validate: {message}", file=sys.stderr)

    out = validate_external(args.model, args.manifest, args.out, n_resamples=args.n_resamples,
                            seed=args.seed, recalibration_fraction=args.recalibration_fraction,
                            progress=None if args.quiet else say, n_jobs=args.jobs,
                            overwrite=args.overwrite)
    result = load_external(out)
    for row in result.checks[result.checks["parameter"] == "unreadable"].itertuples():
        print(f"magn validate: lesion {row.lesion_id}: input error: {row.message}",
              file=sys.stderr)
    for method, entry in result.metrics["methods"].items():
        internal = result.metrics["internal"].get(method)
        inside = (f"; internally (out of fold) {_interval_text(internal['auc_pooled'])}"
                  if internal else "")
        print(f"  {method}: external AUC {_interval_text(entry['auc'])}{inside}")
    if not result.metrics["radiomics"]["included"]:
        print(f"magn validate: radiomics: {result.metrics['radiomics']['reason']}",
              file=sys.stderr)
    n_bad = result.metrics["warnings"]["n_unreadable"]
    print(f"magn validate: {result.metrics['cohort']['n_lesions'] - n_bad} of "
          f"{result.metrics['cohort']['n_lesions']} lesions scored; results: "
          f"{_shown_path(out)} (research use only; not a medical device)")
    return EXIT_INPUT if n_bad else EXIT_OK


def format_probability(p: float) -> str:
    from magn_lib.predict import format_probability as fmt

    return fmt(p)


def _profile_keys() -> str:
    import dataclasses

    from magn_lib.config import Profile

    return ", ".join(f.name for f in dataclasses.fields(Profile) if f.name != "profile")


def _notebook_choices() -> str:
    from magn_lib.config import project_root

    folder = project_root() / "notebooks"
    return ", ".join(sorted(p.stem for p in folder.glob("[0-9][0-9]_*.ipynb")))


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="magn",
        description="Multi-view attention-guided network study (Chen et al. 2022).",
        epilog=EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"magn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (magn COMMAND --help for each)")

    study = sub.add_parser(
        "study", help="run the notebooks of the study in order and write the HTML report",
        description="Run the study's notebooks in order (all, or a selection) with papermill "
                    "and write the HTML report. Notebooks whose inputs are unchanged are "
                    "skipped. Progress goes to stderr, the final status line to stdout.",
        epilog=f"notebooks (for --only/--from/--to, by NN or name): {_notebook_choices()}\n"
               f"parameters (for --set): {_profile_keys()}\n\n{EXIT_CODES_HELP}",
        formatter_class=formatter,
    )
    study.add_argument("--profile", default="demo", help=f"{PROFILE_HELP} (default: demo)")
    study.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one parameter of the profile, e.g. --set epochs=2 "
                            "(repeatable; keys listed below; values as in YAML)")
    study.add_argument("--only", metavar="NN[,NN...]",
                       help="run only these notebooks, e.g. --only 03 (those before it must "
                            "be up to date)")
    study.add_argument("--from", metavar="NN", help="run from this notebook on, e.g. --from 03")
    study.add_argument("--to", metavar="NN", help="run up to this notebook, e.g. --to 02")
    study.add_argument("--quiet", action="store_true",
                       help="no progress; only the final status line (and errors)")
    study.add_argument("--manifest", default=None,
                       help="data_manifest folder of your cohort (default: the embedded cohort)")
    study.add_argument("--out", default=None,
                       help="report folder of this run (default: reports/<profile>)")
    study.add_argument("--work", default=None,
                       help="folder for intermediate data (default: work/<name of --out>-<8 hex>, "
                            "unique to the report folder)")
    study.add_argument("--force", action="store_true",
                       help="re-run the selected notebooks even if their inputs are unchanged")
    study.add_argument("--kernel", default="magn", help="Jupyter kernel name (default: magn)")
    study.add_argument("--notebooks", default=None,
                       help="folder of NN_name.ipynb notebooks (default: the study's notebooks/)")
    _add_execution_flags(study)
    study.set_defaults(func=_cmd_study)

    generate = sub.add_parser(
        "generate", help="write the embedded synthetic cohort (DICOM, masks, manifest, truth)",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    generate.add_argument("--profile", default="demo",
                          help=f"profile whose n_patients/seed/separability to use: "
                               f"{PROFILE_HELP} (default: demo)")
    generate.add_argument("--out", default=None,
                          help="cohort folder (default: data/embedded/<parameters>)")
    generate.add_argument("--n-patients", type=int, default=None)
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--separability", type=float, default=None,
                          help="class signal strength (0 = none; default from the profile)")
    generate.add_argument("--overwrite", action="store_true",
                          help="replace a cohort made with other parameters")
    generate.set_defaults(func=_cmd_generate)

    key = sub.add_parser(
        "deid-key",
        help="write the key from study patient ids to the DICOM identity (private file)",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    key.add_argument("--manifest", required=True, help="the cohort's manifest folder")
    key.add_argument("--out", required=True,
                     help="key file (CSV), outside reports/, work/ and every run's folders")
    key.set_defaults(func=_cmd_deid_key)

    export = sub.add_parser(
        "export", help="pack one configuration of a finished study run into a model bundle",
        description="Write a portable model bundle (a folder, by convention NAME.magn): the "
                    "fold models of one configuration, calibration and operating point fitted "
                    "on the out-of-fold predictions, the preprocessing, the training "
                    "acquisition ranges and patients, a model card and checksums.",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    export.add_argument("--run", required=True, help="the run's report folder, e.g. reports/demo")
    export.add_argument("--out", required=True, help="the bundle folder to write, e.g. model.magn")
    export.add_argument("--work", default=None,
                        help="the run's work folder (default: the one its run record names)")
    export.add_argument("--config", default=None, choices=GRID_CONFIGS, metavar="CONFIG",
                        help="configuration to export: one of " + ", ".join(GRID_CONFIGS)
                             + " (default: the multi-view one with the best pooled "
                               "out-of-fold AUC among those whose fold models were kept)")
    export.add_argument("--target-sensitivity", type=float, default=None,
                        help="operating point: the highest threshold reaching this "
                             "out-of-fold sensitivity (default: the profile's "
                             "target_sensitivity, else Youden's J)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    export.set_defaults(func=_cmd_export)

    pred = sub.add_parser(
        "predict", help="score new lesions with a model bundle (magn export)",
        description="Score one lesion (three DICOM series folders and a sagittal mask) or every "
                    "lesion of a manifest with a model bundle. Per lesion, OUT/<lesion id>/ "
                    "gets prediction.json and case_report.html; a manifest also gives "
                    "OUT/predictions.csv.",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    pred.add_argument("--model", required=True, help="the bundle folder written by magn export")
    pred.add_argument("--out", default="predictions",
                      help="output folder (default: predictions)")
    pred.add_argument("--manifest", help="a data_manifest folder: score every lesion in it")
    pred.add_argument("--sagittal", help="sagittal DICOM series folder")
    pred.add_argument("--coronal", help="coronal DICOM series folder")
    pred.add_argument("--axial", help="axial DICOM series folder")
    pred.add_argument("--mask", help="lesion mask on the sagittal grid: NIfTI (.nii, .nii.gz) "
                                     "or NRRD (.nrrd, as 3D Slicer / ITK-SNAP save it)")
    pred.add_argument("--mask-label", type=int, default=1, help="the lesion's value in the mask")
    pred.add_argument("--lesion-id", help="your id for the lesion (names the outputs; letters, "
                                          "digits, . _ -); never a patient's name")
    pred.add_argument("--patient-id", default=None,
                      help="the patient's study id, if any (checked against the training "
                           "patients for the in-sample warning)")
    pred.add_argument("--no-report", action="store_true",
                      help="write prediction.json only (no HTML, no Grad-CAM)")
    pred.add_argument("--pdf", action="store_true",
                      help="also print each case report to case_report.pdf (needs Chromium)")
    pred.set_defaults(func=_cmd_predict)

    validate = sub.add_parser(
        "validate", help="external validation: score another site's cohort with a model bundle",
        description="Score every lesion of an external cohort (a data_manifest folder) with a "
                    "model bundle, nothing refitted: the bundle's preprocessing, the frozen "
                    "fold-model ensemble, the frozen radiomics pipeline and the readers' calls "
                    "if the manifest has reads. Writes OUT/predictions.csv (one row per lesion "
                    "and method), OUT/metrics.json (discrimination, calibration, the internal "
                    "estimate beside it, input-check warnings counted), OUT/input_checks.csv, "
                    "calibration and decision curves and a per-acquisition breakdown.",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    validate.add_argument("--model", required=True,
                          help="the bundle folder written by magn export")
    validate.add_argument("--manifest", required=True,
                          help="the external cohort's data_manifest folder")
    validate.add_argument("--out", required=True,
                          help="output folder, e.g. reports/site_b_validation")
    validate.add_argument("--recalibration-fraction", type=float, default=None, metavar="F",
                          help="also fit a logistic recalibration on this fraction of the "
                               "external patients and evaluate it on the others (default: "
                               "none)")
    validate.add_argument("--n-resamples", type=int, default=2000,
                          help="patient-bootstrap resamples (default 2000)")
    validate.add_argument("--seed", type=int, default=2022,
                          help="seed of the bootstrap and the recalibration split")
    validate.add_argument("--jobs", type=int, default=-1,
                          help="workers of the radiomics feature extraction (default: one per "
                               "core)")
    validate.add_argument("--overwrite", action="store_true",
                          help="replace an existing output folder")
    validate.add_argument("--quiet", action="store_true", help="no progress messages")
    validate.set_defaults(func=_cmd_validate)

    config = sub.add_parser(
        "config", help="print a profile's resolved parameters (JSON)",
        epilog=f"parameters (for --set): {_profile_keys()}\n\n{EXIT_CODES_HELP}",
        formatter_class=formatter,
    )
    config.add_argument("--profile", default="demo", help=f"{PROFILE_HELP} (default: demo)")
    config.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one parameter, as for magn study (repeatable)")
    _add_execution_flags(config)
    config.set_defaults(func=_cmd_config)

    doctor = sub.add_parser(
        "doctor", help="import every key package and print its version; warn when magn_lib "
                       "is imported from another checkout than the one you are in",
        epilog=EXIT_CODES_HELP, formatter_class=formatter,
    )
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def _silence_stdout() -> None:
    """After a closed pipe: send what is left of stdout to /dev/null, so that the interpreter's
    final flush raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()  # the reader stopped reading (`magn config | head -1`): not an error
        return EXIT_OK
    except InputError as exc:
        print(f"magn {args.command}: input error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OutOfSpaceError as exc:
        print(f"magn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_NOTEBOOK_FAILED
    except (ConfigError, UpstreamError, RuntimeError, FileExistsError) as exc:
        print(f"magn {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
