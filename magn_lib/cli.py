"""The ``magn`` command: ``magn study``, ``magn generate``, ``magn predict``, ``magn doctor``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from magn_lib.errors import ConfigError, InputError

__all__ = ["main"]


def _cmd_doctor(args: argparse.Namespace) -> int:
    from magn_lib.repro import check_environment

    versions = check_environment()
    width = max(map(len, versions))
    for dist, version in versions.items():
        print(f"  {dist:<{width}}  {version}")
    print(f"environment OK: {len(versions)} key packages import")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from magn_lib.config import load_profile

    print(json.dumps(load_profile(args.profile).to_dict(), indent=2))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from magn_lib.pipeline import run_study

    result = run_study(
        profile=args.profile,
        manifest_dir=args.manifest,
        run_dir=args.out,
        work_dir=args.work,
        force=args.force,
        kernel_name=args.kernel,
        notebooks_dir=args.notebooks,
    )
    return 0 if result.succeeded else 1


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


def _cmd_predict(args: argparse.Namespace) -> int:
    from magn_lib.predict import predict_lesion

    series = {view: getattr(args, view) for view in ("sagittal", "coronal", "axial")
              if getattr(args, view)}
    table = predict_lesion(args.run, series=series, mask=args.mask, mask_label=args.mask_label,
                           config=args.config)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    mean = table.iloc[-1]
    print(f"\nprobability of multiple myeloma: {mean['probability']:.3f} -> {mean['call']} "
          "(research use only; not a medical device)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magn",
        description="Multi-view attention-guided network study (Chen et al. 2022).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    study = sub.add_parser(
        "study", help="run every notebook of the study in order and write the HTML report"
    )
    study.add_argument("--profile", default="demo",
                       help="smoke, demo, paper, or a YAML file of one's own (default: demo)")
    study.add_argument("--manifest", default=None,
                       help="data_manifest folder of your cohort (default: the embedded cohort)")
    study.add_argument("--out", default=None,
                       help="report folder of this run (default: reports/<profile>)")
    study.add_argument("--work", default=None,
                       help="folder for intermediate data (default: work/<name of --out>)")
    study.add_argument("--force", action="store_true",
                       help="re-run every notebook even if its inputs are unchanged")
    study.add_argument("--kernel", default="magn", help="Jupyter kernel name (default: magn)")
    study.add_argument("--notebooks", default=None,
                       help="folder of NN_name.ipynb notebooks (default: the study's notebooks/)")
    study.set_defaults(func=_cmd_study)

    generate = sub.add_parser(
        "generate", help="write the embedded synthetic cohort (DICOM, masks, manifest, truth)"
    )
    generate.add_argument("--profile", default="demo",
                          help="profile whose n_patients/seed/separability to use")
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
    )
    key.add_argument("--manifest", required=True, help="the cohort's manifest folder")
    key.add_argument("--out", required=True, help="key file (CSV), outside reports/ and work/")
    key.set_defaults(func=_cmd_deid_key)

    pred = sub.add_parser(
        "predict", help="score one new lesion with the trained models of a finished study run"
    )
    pred.add_argument("--run", required=True, help="the run's report folder, e.g. reports/demo")
    pred.add_argument("--sagittal", required=True, help="sagittal DICOM series folder")
    pred.add_argument("--coronal", help="coronal DICOM series folder")
    pred.add_argument("--axial", help="axial DICOM series folder")
    pred.add_argument("--mask", required=True, help="lesion mask (NIfTI) on the sagittal grid")
    pred.add_argument("--mask-label", type=int, default=1, help="the lesion's value in the mask")
    pred.add_argument("--config", default="multi-view+attention",
                      help="configuration whose fold models score (default: the paper's MAGN)")
    pred.set_defaults(func=_cmd_predict)

    config = sub.add_parser("config", help="print a profile's resolved parameters")
    config.add_argument("--profile", default="demo")
    config.set_defaults(func=_cmd_config)

    doctor = sub.add_parser("doctor", help="import every key package and print its version")
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, InputError, RuntimeError, FileExistsError) as exc:
        print(f"magn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
