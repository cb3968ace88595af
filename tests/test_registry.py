"""Tests of the component registry: registration, names, errors, entry-point plugins."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from pctkit import registry


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Every test starts from, and leaves behind, the registry of installed packages."""
    registry.reset()
    yield
    registry.reset()


def _tiny_backbone(*, width: int = 4, depth: int = 2) -> dict[str, int]:
    """A tiny test backbone.

    Args:
        width: channels of every layer, a description
            that goes on over two lines.
        depth: number of layers.
    """
    return {"width": width, "depth": depth}


# --------------------------------------------------------------------------- registration


def test_register_decorator_and_versioned_names() -> None:
    registry.register("backbones", "mynet.v2")(_tiny_backbone)
    component = registry.get("backbones", "mynet.v2")
    assert component.factory is _tiny_backbone
    assert component.origin == "<code>" and not component.builtin
    assert component.description == "A tiny test backbone."
    assert component.build(width=8) == {"width": 8, "depth": 2}
    assert "mynet.v2" in registry.names("backbones")


def test_register_defaults_to_the_function_name() -> None:
    @registry.register("heads")
    def my_head(in_channels: list[int], /, *, channels: int = 3) -> int:
        """A head."""
        return channels

    assert registry.get("heads", "my_head").factory is my_head
    # Engine-supplied positional-only arguments are not recipe parameters.
    assert list(registry.get("heads", "my_head").parameters.model_fields) == ["channels"]


@pytest.mark.parametrize("name", ["MyNet", "my-net", "2net", "mynet.", "my net", ".v2", "_net"])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(registry.RegistryError, match=f"invalid backbone name '{name}'.*'mynet.v2'"):
        registry.register("backbones", name)(_tiny_backbone)
    assert name not in registry.names("backbones")


def test_unknown_kind_suggests_the_right_one() -> None:
    with pytest.raises(registry.RegistryError, match="did you mean 'backbones'"):
        registry.get("backbone", "timm")


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(registry.UnknownComponentError) as caught:
        registry.get("heads", "fusoin")
    error = caught.value
    assert isinstance(error, KeyError)  # code written against a dict still works
    assert error.suggestions[0] == "fusion"
    assert "did you mean 'fusion'" in str(error)
    assert {"deeplabv3plus", "fusion"} <= set(error.available)
    assert "Available: " in str(error) and "deeplabv3plus" in str(error)


def test_a_clash_without_override_raises_and_override_replaces() -> None:
    registry.register("backbones", "mynet")(_tiny_backbone)

    def other(*, width: int = 1) -> int:
        """Another backbone."""
        return width

    with pytest.raises(registry.RegistryError, match="already registered by '<code>'"):
        registry.register("backbones", "mynet")(other)
    assert registry.get("backbones", "mynet").factory is _tiny_backbone
    registry.register("backbones", "mynet", override=True)(other)
    assert registry.get("backbones", "mynet").factory is other
    # Registering the same factory again is harmless.
    registry.register("backbones", "mynet")(other)


def test_a_clash_with_a_builtin_raises() -> None:
    with pytest.raises(registry.RegistryError, match="already registered by 'pctkit'"):
        registry.register("backbones", "timm")(_tiny_backbone)
    assert registry.get("backbones", "timm").builtin


def test_deprecated_alias_warns_and_resolves() -> None:
    registry.register("backbones", "mynet.v2")(_tiny_backbone)
    registry.deprecate("backbones", "mynet", "mynet.v2")
    with pytest.warns(DeprecationWarning, match="'mynet' is deprecated; use 'mynet.v2'"):
        component = registry.get("backbones", "mynet")
    assert component.name == "mynet.v2"
    assert registry.aliases("backbones")["mynet"] == "mynet.v2"


# --------------------------------------------------------------------------- parameters


def test_untyped_parameter_is_a_broken_component() -> None:
    def untyped(*, width=4) -> int:  # type: ignore[no-untyped-def]
        """Untyped."""
        return int(width)

    with pytest.raises(registry.BrokenComponentError, match="parameter 'width' has no type annotation"):
        registry.register("backbones", "untyped")(untyped)
    assert "untyped" not in registry.names("backbones")


def test_var_keyword_no_docstring_and_reserved_type_are_broken() -> None:
    def flexible(**options: int) -> int:
        """Takes anything."""
        return len(options)

    def undocumented(*, width: int = 1) -> int:
        return width

    def typed(*, type: str = "x") -> str:
        """Has a parameter named type."""
        return type

    for name, factory, message in (
        ("flexible", flexible, r"\*args/\*\*kwargs"),
        ("undocumented", undocumented, "has no docstring"),
        ("typed", typed, "'type' is reserved"),
    ):
        with pytest.raises(registry.BrokenComponentError, match=message):
            registry.register("backbones", name)(factory)


def test_parameters_model_types_defaults_and_docstring_descriptions() -> None:
    registry.register("backbones", "mynet")(_tiny_backbone)
    parameters = registry.get("backbones", "mynet").parameters
    fields = parameters.model_fields
    assert list(fields) == ["width", "depth"]
    assert (
        fields["width"].description == "channels of every layer, a description that goes on over two lines."
    )
    assert fields["depth"].description == "number of layers."
    assert fields["width"].default == 4
    assert parameters(width=8).width == 8  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):
        parameters(width="wide")
    with pytest.raises(ValidationError):
        parameters(widht=8)


def test_class_factories_read_their_init() -> None:
    @registry.register("losses", "my_loss")
    class MyLoss:
        """A loss class.

        Args:
            margin: the margin.
        """

        def __init__(self, *, margin: float = 1.0) -> None:
            self.margin = margin

    component = registry.get("losses", "my_loss")
    assert list(component.parameters.model_fields) == ["margin"]
    assert component.parameters.model_fields["margin"].description == "the margin."
    assert component.build(margin=2.0).margin == 2.0


# --------------------------------------------------------------------------- built-ins


def test_builtins_come_from_pctkits_own_entry_points() -> None:
    components = registry.list_components()
    by_key = {(c.kind, c.name): c for c in components}
    for key in [
        ("backbones", "timm"),
        ("heads", "fusion"),
        ("heads", "deeplabv3plus"),
        ("losses", "class_aware_cross_entropy"),
        ("datasets", "digit_scenes"),
        ("optimizers", "adamw"),
        ("schedulers", "poly"),
    ]:
        assert by_key[key].origin == "pctkit" and by_key[key].builtin, key
    assert [c.kind for c in components] == sorted((c.kind for c in components), key=registry.KINDS.index)
    # Installed plugins may add their own problems; pctkit itself has none.
    assert [p for p in registry.problems() if p.origin == "pctkit"] == []
    assert "output_stride" in registry.get("backbones", "timm").parameters.model_fields


def test_list_components_with_a_pattern() -> None:
    names = [c.name for c in registry.list_components("losses", "*pool_soft_margin")]
    assert names == ["lse_pool_soft_margin", "max_pool_soft_margin"]
    assert registry.list_components("losses", "nothing*") == []


# --------------------------------------------------------------------------- plugins


PLUGIN_MODULES = ("fakeplugin_components", "fakeplugin_broken")


@pytest.fixture
def fake_plugin(tmp_path: Path) -> Iterator[Path]:
    """A third-party distribution 'fakeplugin' installed on sys.path: a good backbone,
    one whose module raises on import, one clashing with the built-in 'timm', and an
    on-purpose replacement of the built-in 'fusion' head."""
    (tmp_path / "fakeplugin_components.py").write_text(
        textwrap.dedent(
            '''
            def fake_net(*, width: int = 4) -> dict[str, int]:
                """A fake backbone from a plugin.

                Args:
                    width: channels.
                """
                return {"width": width}


            def fake_head(in_channels: list[int], in_strides: list[int], num_classes: int, /) -> str:
                """A replacement fusion head."""
                return "replaced"
            '''
        )
    )
    (tmp_path / "fakeplugin_broken.py").write_text('raise RuntimeError("plugin is broken")\n')
    dist_info = tmp_path / "fakeplugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [pctkit.backbones]
            fake_net = fakeplugin_components:fake_net
            broken_net = fakeplugin_broken:broken_net
            timm = fakeplugin_components:fake_net

            [pctkit.heads]
            override:fusion = fakeplugin_components:fake_head
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    registry.reset()
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for module in PLUGIN_MODULES:
            sys.modules.pop(module, None)
        registry.reset()


@pytest.mark.usefixtures("fake_plugin")
def test_a_good_plugin_component_is_listed_with_its_package() -> None:
    component = registry.get("backbones", "fake_net")
    assert component.origin == "fakeplugin" and not component.builtin
    assert component.build(width=2) == {"width": 2}
    listed = {c.name: c.origin for c in registry.list_components("backbones")}
    assert listed["fake_net"] == "fakeplugin"


@pytest.mark.usefixtures("fake_plugin")
def test_a_broken_plugin_is_reported_and_the_rest_keeps_working() -> None:
    assert "broken_net" in registry.names("backbones")  # known without importing
    with pytest.raises(registry.BrokenComponentError, match="plugin is broken"):
        registry.get("backbones", "broken_net")
    problems = {problem.name: problem for problem in registry.problems("backbones")}
    assert problems["broken_net"].origin == "fakeplugin"
    assert "import failed: RuntimeError: plugin is broken" in problems["broken_net"].error
    assert "package 'fakeplugin'" in str(problems["broken_net"])
    assert registry.get("backbones", "fake_net").origin == "fakeplugin"
    assert "broken_net" not in [c.name for c in registry.list_components("backbones")]


@pytest.mark.usefixtures("fake_plugin")
def test_a_clash_with_a_builtin_is_reported_and_the_builtin_kept() -> None:
    assert registry.get("backbones", "timm").origin == "pctkit"
    clash = [p for p in registry.problems("backbones") if p.name == "timm"]
    assert len(clash) == 1
    assert clash[0].origin == "fakeplugin"
    assert "name already taken by package 'pctkit'" in clash[0].error
    assert "override:timm" in clash[0].error


@pytest.mark.usefixtures("fake_plugin")
def test_an_override_entry_point_replaces_a_builtin() -> None:
    component = registry.get("heads", "fusion")
    assert component.origin == "fakeplugin"
    assert component.build([8], [4], 3) == "replaced"
    assert not [p for p in registry.problems("heads") if p.name == "fusion"]


def test_plugin_is_gone_after_the_fixture() -> None:
    # The fixture cleans up sys.path and the registry: nothing of 'fakeplugin' remains.
    assert "fake_net" not in registry.names("backbones")
    assert registry.get("heads", "fusion").origin == "pctkit"
