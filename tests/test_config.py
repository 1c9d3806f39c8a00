"""One place for every option: the schema's defaults and descriptions, config/config.yaml,
config/README.md's tables and the options the stages declare all agree."""

from __future__ import annotations

import yaml
from conftest import ROOT

from astroflow.live import OPTIONS as LIVE_OPTIONS
from astroflow.options import SCHEMA_PATH, flatten, option_rows, update_readme, with_defaults
from astroflow.stages import PLAN_OPTIONS, STAGES

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def _defaults() -> dict:
    """The schema's defaults, filled in as Snakemake's validate() does."""
    return with_defaults({}, SCHEMA)


def test_every_option_is_described():
    missing = [name for name, _, desc in option_rows(SCHEMA) if not desc]
    assert missing == [] and len(option_rows(SCHEMA)) > 80


def test_config_yaml_holds_the_schemas_defaults():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config.pop("data")  # the demo night: a location, not a default
    assert flatten(config) == {k: v for k, v in flatten(_defaults()).items()}


def test_readme_tables_are_generated_from_the_schema():
    readme = (ROOT / "config/README.md").read_text()
    assert update_readme(readme, SCHEMA) == readme, "run `astroflow config-docs`"


def test_stages_declare_only_existing_options_and_every_option_is_read():
    names = [name for name, _, _ in option_rows(SCHEMA)]
    declared = [o for s in STAGES.values() for o in s.options] + list(PLAN_OPTIONS) + list(LIVE_OPTIONS)

    def covers(option, name):  # a section option covers its keys, a key its sub-values
        return name == option or name.startswith(option + ".") or option.startswith(name + ".")

    assert [o for o in declared if not any(covers(o, n) for n in names)] == []
    assert [n for n in names if not any(covers(o, n) for o in declared)] == []
