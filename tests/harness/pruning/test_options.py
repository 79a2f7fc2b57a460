"""The one option schema: typed values, command-line text, errors, and every method's schema."""

from __future__ import annotations

import pytest
import torch

from prunebench.harness.errors import PrunebenchError
from prunebench.harness.models import create_model
from prunebench.harness.pruning import METHODS, PruneContext, PruningConfig, get_method
from prunebench.harness.pruning.base import MethodInfo, PruningMethod, register_method
from prunebench.harness.pruning.options import Option, OptionSchema

SCHEMA = OptionSchema(
    Option("kd", bool, False, "distil"),
    Option("round_to", int, 1, "multiples of N", min=1, example=8),
    Option("lr", float, None, "learning rate (default: the recipe's)", min=0,
           min_exclusive=True, example=0.01),
    Option("columns", float, 1.0, "fraction", min=0, max=1, min_exclusive=True),
    Option("rule", str, "ratio", "how", choices=("ratio", "threshold")),
    Option("target", str, None, "a KIND=VALUE spec", example="params=0.5"),
)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_typed_values_are_checked_and_normalised() -> None:
    got = SCHEMA.parse("m", {"kd": 1, "round_to": 8, "lr": 1, "columns": 0.5, "rule": "threshold",
                             "target": "params=0.5"})
    assert got == {"kd": True, "round_to": 8, "lr": 1.0, "columns": 0.5, "rule": "threshold",
                   "target": "params=0.5"}
    assert type(got["kd"]) is bool and type(got["lr"]) is float
    assert SCHEMA.parse("m", {}) == {}  # only the keys given; defaults() has the rest
    assert SCHEMA.defaults() == {"kd": False, "round_to": 1, "lr": None, "columns": 1.0,
                                 "rule": "ratio", "target": None}


@pytest.mark.parametrize(("options", "message"), [
    ({"kd": "yes"}, "option kd='yes' of method 'm' must be a bool (1/0, true/false, yes/no, "
                    "on/off); e.g. kd=true"),
    ({"kd": 2}, "option kd=2 of method 'm' must be a bool"),
    ({"round_to": True}, "option round_to=True of method 'm' must be an int >= 1; e.g. "
                         "round_to=8"),
    ({"round_to": 8.0}, "must be an int >= 1"),
    ({"round_to": "8"}, "must be an int >= 1"),
    ({"round_to": 0}, "option round_to=0 of method 'm' must be an int >= 1"),
    ({"lr": 0}, "option lr=0 of method 'm' must be a float > 0; e.g. lr=0.01"),
    ({"lr": float("nan")}, "must be a float > 0"),
    ({"lr": None}, "option lr=None of method 'm' must be a float > 0"),
    ({"columns": 1.5}, "option columns=1.5 of method 'm' must be a float in (0, 1]"),
    ({"rule": "best"}, "option rule='best' of method 'm' must be a str, one of ratio, threshold"),
    ({"target": {"params": 0.5}}, "option target={'params': 0.5} of method 'm' must be a str"),
])
def test_wrong_type_or_range_names_option_type_and_range(options: dict, message: str) -> None:
    with pytest.raises(PrunebenchError) as err:
        SCHEMA.parse("m", options)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("text", "value"), [
    ("kd=1", True), ("kd=0", False), ("kd=true", True), ("kd=FALSE", False), ("kd=Yes", True),
    ("kd=no", False), ("kd=ON", True), ("kd=off", False), (" kd = true ", True),
])
def test_bool_text(text: str, value: bool) -> None:
    assert SCHEMA.parse_text("m", text) == ("kd", value)


def test_number_and_string_text() -> None:
    assert SCHEMA.parse_text("m", "round_to=8") == ("round_to", 8)
    assert SCHEMA.parse_text("m", "lr=1e-3") == ("lr", 0.001)
    assert SCHEMA.parse_text("m", "columns=1") == ("columns", 1.0)
    assert SCHEMA.parse_text("m", "target=accuracy-loss=0.5") == ("target", "accuracy-loss=0.5")
    assert SCHEMA.parse_text("m", "rule=threshold") == ("rule", "threshold")


@pytest.mark.parametrize(("text", "message"), [
    ("kd=maybe", "option kd=maybe of method 'm' must be a bool (1/0, true/false, yes/no, on/off)"
                 "; e.g. kd=true"),
    ("round_to=0", "option round_to=0 of method 'm' must be an int >= 1; e.g. round_to=8"),
    ("round_to=x", "option round_to=x of method 'm' must be an int >= 1; e.g. round_to=8"),
    ("round_to=2.5", "option round_to=2.5 of method 'm' must be an int >= 1"),
    ("lr=-1", "option lr=-1 of method 'm' must be a float > 0; e.g. lr=0.01"),
    ("lr=nan", "must be a float > 0"),
    ("columns=0", "option columns=0 of method 'm' must be a float in (0, 1]"),
    ("rule=best", "option rule=best of method 'm' must be a str, one of ratio, threshold; e.g. "
                  "rule=ratio"),
    ("kd", "option 'kd' of method 'm' is not KEY=VALUE; use e.g. kd=true"),
    ("kd=", "is not KEY=VALUE"),
    ("=1", "is not KEY=VALUE"),
])
def test_bad_text_is_one_line_with_type_range_and_example(text: str, message: str) -> None:
    with pytest.raises(PrunebenchError) as err:
        SCHEMA.parse_text("m", text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_options_list_the_method_options() -> None:
    want = ("unknown option 'colums' for method 'm' (did you mean 'columns'?); its options: "
            "columns, kd, lr, round_to, rule, target")
    for parse in (lambda: SCHEMA.parse("m", {"colums": 0.5}),
                  lambda: SCHEMA.parse_text("m", "colums=0.5")):
        with pytest.raises(PrunebenchError) as err:
            parse()
        assert str(err.value) == want
    with pytest.raises(PrunebenchError, match="unknown option 'zzz' for method 'm'; its"):
        SCHEMA.parse("m", {"zzz": 1})
    with pytest.raises(PrunebenchError, match="unknown option 'kd': method 'dense' takes no "
                                              "options"):
        OptionSchema().parse("dense", {"kd": True})


def test_describe_and_declaration_errors() -> None:
    rows = {r["name"]: r for r in SCHEMA.describe()}
    assert rows["round_to"] == {"name": "round_to", "type": "int", "default": 1, "range": ">= 1",
                                "help": "multiples of N"}
    assert rows["columns"]["range"] == "in (0, 1]" and rows["kd"]["type"] == "bool"
    assert rows["rule"]["range"] == "one of ratio, threshold" and rows["target"]["range"] == ""
    for bad in (lambda: Option("x", list, None, "h"), lambda: Option("x", int, 0, "h", min=1),
                lambda: Option("x", int, 1, "h", choices=("a",)),
                lambda: Option("x", str, "a", "h", min=1)):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(TypeError, match="declared twice"):
        OptionSchema(Option("a", int, 1, "h"), Option("a", int, 2, "h"))


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("method", METHODS.list())
def test_every_method_declares_a_schema(method: str) -> None:
    schema = get_method(method).options
    assert isinstance(schema, OptionSchema)
    for o in schema:
        assert o.help and o.type in (bool, int, float, str)
        if o.default is None and o.name not in ("target", "budget"):
            assert "default" in o.help, f"{method}.{o.name}: say what the method uses"


@pytest.mark.parametrize("method", METHODS.list())
def test_every_schema_round_trips_its_defaults(method: str) -> None:
    schema = get_method(method).options
    given = {k: v for k, v in schema.defaults().items() if v is not None}
    assert schema.parse(method, given) == given
    for key, value in given.items():
        assert schema.parse_text(method, f"{key}={_text(value)}") == (key, value)
    assert [r["name"] for r in schema.describe()] == list(schema.defaults())


def test_dense_takes_no_options() -> None:
    assert len(get_method("dense").options) == 0
    with pytest.raises(PrunebenchError, match="method 'dense' takes no options"):
        get_method("dense").apply(create_model("test_convnet"),
                                  PruningConfig(options={"round_to": 8}),
                                  PruneContext(torch.zeros(1, 3, 32, 32)))


# methods that run without data in milliseconds: (method, model, config without options)
CHEAP = [
    ("l1", "test_convnet", {"global_ratio": 0.5}),
    ("bn_scale", "test_convnet", {"global_ratio": 0.5}),
    ("fpgm", "test_convnet", {"global_ratio": 0.5}),
    ("random", "test_convnet", {"global_ratio": 0.5}),
    ("antidote", "test_resnet", {"global_keep": 0.5, "exec_mode": "masked"}),
    ("antidote_fast", "test_resnet", {"global_keep": 0.5, "exec_mode": "fast"}),
    ("instance_sparsity", "test_resnet", {"global_keep": 0.5, "exec_mode": "masked"}),
]


@pytest.mark.filterwarnings("ignore:no data set given")
@pytest.mark.parametrize(("name", "model_name", "kw"), CHEAP)
def test_explicit_defaults_build_the_same_network(name: str, model_name: str, kw: dict) -> None:
    model = create_model(model_name).eval()
    ctx = PruneContext(torch.zeros(1, 3, 32, 32))
    defaults = {k: v for k, v in get_method(name).options.defaults().items() if v is not None}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [get_method(name).apply(model, PruningConfig(name, options=o, **kw), ctx)(x)
                for o in ({}, defaults)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_a_method_without_schema_is_refused() -> None:
    class NoSchema(PruningMethod):
        info = MethodInfo("no_schema", "static", "test", "-")

        def apply(self, model, config, ctx):  # noqa: ANN001, ANN201
            return model

    with pytest.raises(TypeError, match="no_schema.*OptionSchema"):
        register_method(NoSchema())
    assert "no_schema" not in METHODS.list()
