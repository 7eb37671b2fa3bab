"""Reading a recipe file: TOML, the model's validation, the rules across keys, and its kernel profile.

Apart from recipe/model.py because it needs both the recipe's model and recipe/kernel_profiles.py, whose
profiles are typed with that model's types (so the model cannot import the profile loader back).
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.model import Recipe, check_layout, check_storage, one_line, parse_recipe
from imagekit.util.errors import RecipeError, UsageError


def load_recipe(path: str | Path, *, kernels_dir: Path | None = None) -> Recipe:
    """Read and validate a recipe file; its kernel profile is looked for in `kernels_dir` first."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such recipe file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(path, None, one_line(f"not valid TOML: {exc}")) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise RecipeError(path, None, "not valid TOML: nested too deeply") from None
    except ValueError:  # tomllib: an integer past Python's 4300-digit limit for int("...")
        raise RecipeError(path, None, "not valid TOML: a number too long to read") from None
    for reserved in ("path", "sha256", "kernels_dir"):
        if reserved in data:
            raise RecipeError(path, reserved, "unknown key")
    recipe = parse_recipe(data, path)
    check_layout(recipe)
    check_storage(recipe)
    load_profile(recipe.kernel.profile, recipe_path=path, kernels_dir=kernels_dir)
    return recipe.model_copy(update={"sha256": hashlib.sha256(raw).hexdigest(), "kernels_dir": kernels_dir})
