"""Training recipes as data: one TOML file per recipe, shipped in this folder.

A recipe file holds the fields of :class:`~prunebench.harness.train.Recipe` at its top level
(``epochs``, ``batch_size``, ``lr``, ``schedule``, ``milestones``, ``crop_padding``, ``hflip``,
...) and a one-line ``description``; a field it leaves out keeps the ``Recipe`` default. The
shipped ones are registered by file name in :data:`RECIPES` (``prunebench recipes`` lists them);
:func:`load_recipe` takes such a name or the path of a file of one's own. An unknown field, a
value of the wrong kind or out of range raises :class:`PrunebenchError` naming the file and the
field, before any work.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.registry import Registry
from prunebench.harness.train import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RECIPE_DIR = Path(__file__).resolve().parent
RECIPES: Registry[Path] = Registry("recipe")
DEFAULT_RECIPE_NAME = "digits"
# what a file may set: every Recipe field but the runtime (the command line's), and a description
_FIELDS = tuple(f.name for f in fields(Recipe) if f.name != "runtime")


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise PrunebenchError(f"recipe file {path} is not valid TOML ({exc}); fix the "
                              "file") from None
    except OSError as exc:
        raise PrunebenchError(f"recipe file {path} cannot be read ({exc.strerror}); check the "
                              "path") from None


for _file in sorted(RECIPE_DIR.glob("*.toml")):
    RECIPES.add(_file.stem, _file, description=str(_read(_file).get("description", "")))


def recipe_from_mapping(data: dict[str, Any], name: str, where: str) -> Recipe:
    """The :class:`Recipe` of a recipe file's table (``where`` names the file in errors)."""
    values = {k: v for k, v in data.items() if k != "description"}
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise PrunebenchError(f"recipe {where}: unknown field {unknown[0]!r}; the fields are "
                              f"{', '.join(_FIELDS)}")
    values.setdefault("name", name)
    try:
        return Recipe(**values)
    except PrunebenchError as exc:
        raise PrunebenchError(f"recipe {where}: {exc}") from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (see :data:`RECIPES`) or a recipe TOML file by path."""
    text = str(name_or_path)
    if text in RECIPES:
        path = RECIPES.get(text)
        return recipe_from_mapping(_read(path), text, f"{text!r} ({path})")
    path = Path(text).expanduser()
    if path.suffix != ".toml" and not path.exists():
        RECIPES.get(text)  # an unknown name lists the shipped recipes
    if not path.is_file():
        raise PrunebenchError(f"recipe file {path} does not exist; give a .toml file or one of "
                              f"{', '.join(RECIPES.list())}")
    return recipe_from_mapping(_read(path), path.stem, str(path))


def describe(name: str) -> dict[str, Any]:
    """Name, description and every field of a shipped recipe (``prunebench recipes``)."""
    recipe = load_recipe(name)
    return {"name": name, "description": RECIPES.metadata(name)["description"],
            "key": recipe.key, **{k: v for k, v in recipe.to_dict().items() if k != "name"}}
