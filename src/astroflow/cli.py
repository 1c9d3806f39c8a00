"""Command line: ``astroflow live`` (live stacking of a capture folder, with its web page),
``astroflow make-sample`` (synthetic night), ``astroflow score`` (vs truth), ``astroflow
registered`` (registered lights of a run, which integrates without writing them), ``astroflow
compile`` (RCD's numba kernels into their cache) and ``astroflow config-docs`` (the option tables of
config/README.md from the schema)."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _make_sample(args) -> int:
    from .synth import NightSpec, make_night

    width, height = (int(v) for v in args.size.lower().split("x"))
    filters = tuple(f.strip() for f in args.filters.split(",")) if args.filters else ("L",)
    spec = NightSpec(
        filters=filters,
        osc=args.osc,
        frames=args.frames,
        width=width,
        height=height,
        seed=args.seed,
        dtype=args.dtype,
    )
    make_night(args.out, spec)
    kind = "OSC" if args.osc else ",".join(filters)
    print(
        f"wrote a synthetic night ({kind}, {args.frames} lights per filter, {width}x{height}) to {args.out}"
    )
    return 0


def _score(args) -> int:
    import numpy as np

    from .io import read_image
    from .quality import score
    from .synth import load_truth

    image = read_image(args.image)[0]
    single = read_image(args.single)[0] if args.single else None
    if image.ndim == 3:
        image = image.mean(axis=0)
        single = single.mean(axis=0) if single is not None else None
    result = score(np.asarray(image), load_truth(args.night), args.band, single=single)
    print(json.dumps(result, indent=1))
    return 0


def _compile(args) -> int:
    from . import debayer

    debayer.compile_kernels()
    print("astroflow: RCD's numba kernels are cached")
    return 0


def _registered(args) -> int:
    from pathlib import Path

    import yaml

    from .io import write_fits
    from .stages.register import registered_image
    from .tables import read_tsv

    target = Path(args.target)
    saved = target / "provenance" / "config.yaml"
    options = yaml.safe_load(saved.read_text()).get("registration") if saved.exists() else None
    rows = read_tsv(target / "frames.tsv") if (target / "frames.tsv").exists() else []
    out = Path(args.out) if args.out else target / "registered"
    out.mkdir(parents=True, exist_ok=True)
    for light in args.lights or [r["path"] for r in rows if r.get("reg_method")]:
        try:
            image, header, row = registered_image(target, light, options, rows)
        except FileNotFoundError as exc:
            print(f"astroflow registered: {exc}", file=sys.stderr)
            return 2
        path = out / row["calibrated"].replace("_c.fits", "_r.fits")
        write_fits(path, image, header)
        print(path)
    return 0


def _config_docs(args) -> int:
    from pathlib import Path

    import yaml

    from .options import SCHEMA_PATH, update_readme

    readme = Path(args.readme)
    readme.write_text(update_readme(readme.read_text(), yaml.safe_load(SCHEMA_PATH.read_text())))
    print(f"astroflow: option tables of {readme} regenerated from {SCHEMA_PATH}")
    return 0


def _live(args) -> int:
    import logging
    from pathlib import Path

    import yaml
    from jsonschema import ValidationError

    from .live.server import serve
    from .live.session import Session
    from .options import with_defaults

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    watch = Path(args.watch)
    if not watch.is_dir():
        print(f"astroflow live: the watched folder {watch} does not exist", file=sys.stderr)
        return 2
    try:
        cfg = with_defaults((yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        print(f"astroflow live: config {args.config}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return serve(Session(watch, args.out, cfg, masters_dir=args.masters), args.host, args.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="astroflow", description=__doc__)
    parser.add_argument("--version", action="version", version=f"astroflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("live", help="stack a capture folder live and serve the stack on a web page")
    p.add_argument("--watch", required=True, help="folder the capture program writes frames to (read only)")
    p.add_argument("--out", required=True, help="results folder (one folder per stack, ledger.tsv, masters/)")
    p.add_argument("--masters", help="folder of masters to use (e.g. a pipeline run's OUT/<target>/masters)")
    p.add_argument("--config", help="YAML config (config/config.yaml's format; missing options are defaults)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (0.0.0.0: every network, your choice)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_live)

    p = sub.add_parser("make-sample", help="generate a synthetic night with known truth")
    p.add_argument("out", help="folder to create (lights/, darks/, flats/, bias/, truth/)")
    p.add_argument("--filters", default="L", help="comma-separated mono filters, e.g. L,R,G,B or H,O,S")
    p.add_argument("--osc", action="store_true", help="one-shot-colour (RGGB Bayer) frames instead")
    p.add_argument("--frames", type=int, default=20, help="lights per filter")
    p.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["uint16", "float32"], default="uint16")
    p.set_defaults(func=_make_sample)

    p = sub.add_parser("score", help="score a stack against a synthetic night's truth")
    p.add_argument("night", help="the generated night folder (with truth/)")
    p.add_argument("image", help="stacked image (FITS/XISF)")
    p.add_argument("--single", help="a registered single frame, for the noise gain")
    p.add_argument("--band", default="L")
    p.set_defaults(func=_score)

    p = sub.add_parser(
        "registered", help="write registered lights of a finished run (its transforms, its options)"
    )
    p.add_argument("target", help="a run's OUT/<target> folder")
    p.add_argument("lights", nargs="*", help="lights (any end of their path); none: every registered light")
    p.add_argument("--out", help="folder to write <stem>_r.fits to (default OUT/<target>/registered)")
    p.set_defaults(func=_registered)

    p = sub.add_parser("compile", help="compile RCD's numba kernels into their cache (make install does)")
    p.set_defaults(func=_compile)

    p = sub.add_parser("config-docs", help="regenerate config/README.md's option tables from the schema")
    p.add_argument("--readme", default="config/README.md")
    p.set_defaults(func=_config_docs)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
