"""The `inheritune` commands, as `litgpt inheritune <command>`, `litgpt-inheritune <command>` and
`python -m litgpt_inheritune <command>`."""


def commands() -> dict:
    """The subcommands, imported when a CLI is built."""
    from litgpt_inheritune.analyze import main as analyze_fn
    from litgpt_inheritune.card import main as card_fn
    from litgpt_inheritune.compare import main as compare_fn
    from litgpt_inheritune.convert_gguf import main as convert_gguf_fn
    from litgpt_inheritune.evaluate import main as evaluate_fn
    from litgpt_inheritune.export import main as export_fn
    from litgpt_inheritune.grow import main as grow_fn
    from litgpt_inheritune.init import main as init_fn
    from litgpt_inheritune.prepare_data import main as prepare_data_fn
    from litgpt_inheritune.pretrain import setup as pretrain_fn

    return {
        "init": init_fn,
        "pretrain": pretrain_fn,
        "prepare_data": prepare_data_fn,
        "analyze": analyze_fn,
        "grow": grow_fn,
        "compare": compare_fn,
        "convert_gguf": convert_gguf_fn,
        "evaluate": evaluate_fn,
        "export": export_fn,
        "card": card_fn,
    }


def name_the_choices_on_a_typo() -> None:
    """jsonargparse 4.41 (the newest litgpt 0.5.13 allows) answers a value outside a Literal of strings (``--dtype
    fp16``) with "Cannot take a Union of no types." (it builds ``Union[()]``); this says which values are valid."""
    from typing import Literal, get_args, get_origin

    from jsonargparse import _typehints

    adapt_typehints = _typehints.adapt_typehints
    if getattr(adapt_typehints, "names_choices", False):
        return

    def adapt(val, typehint, *args, **kwargs):
        if (
            get_origin(typehint) is Literal
            and isinstance(val, str)
            and all(isinstance(c, str) for c in get_args(typehint))
        ):
            if val not in get_args(typehint):
                raise ValueError(f"{val!r} is not one of: {', '.join(get_args(typehint))}")
        return adapt_typehints(val, typehint, *args, **kwargs)

    adapt.names_choices = True
    _typehints.adapt_typehints = adapt


def take_a_whole_optimizer_dict() -> None:
    """jsonargparse 4.41 fails with "'dict' object has no attribute 'init_args'" when a whole class_path dict on the
    command line (``--optimizer '{"class_path": ..., "init_args": ...}'``, or ``--optimizer.class_path``) replaces
    a default that is one too (pretrain's and grow's AdamW with the paper's arguments): it reads the default's
    init_args as an attribute, to compare them with the new ones. A new class replaces the default whole, so the
    default is set aside first."""
    from jsonargparse._typehints import ActionTypeHint

    call = ActionTypeHint.__call__
    if getattr(call, "takes_whole_dicts", False):
        return

    def take(self, *args, **kwargs):
        # args: parser, cfg, value, option string (none when jsonargparse calls it to build the action)
        if len(args) == 4 and args[3] in (f"--{self.dest}", f"--{self.dest}.class_path"):
            previous = args[1].get(self.dest)
            if isinstance(previous, dict) and "init_args" in previous:
                args[1][self.dest] = None
        return call(self, *args, **kwargs)

    take.takes_whole_dicts = True
    ActionTypeHint.__call__ = take


def adapt_jsonargparse() -> None:
    name_the_choices_on_a_typo()
    take_a_whole_optimizer_dict()
    take_optional_positionals()


def take_optional_positionals() -> None:
    """``pretrain``'s checkpoint_dir may be left out when a LitGPT recipe names it as initial_checkpoint_dir, yet
    stays positional (``pretrain DIR``): jsonargparse's setting for optional arguments given by position."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(parse_optionals_as_positionals=True)


def extend_litgpt_cli(litgpt_main) -> None:
    """Adds `inheritune` to the subcommands of ``litgpt.__main__`` (called by litgpt_inheritune_hook)."""
    adapt_jsonargparse()
    litgpt_main.PARSER_DATA["inheritune"] = {
        "_help": "Inheritune: derive small base models from the early blocks of a large one.",
        **commands(),
    }
    stock_commands = litgpt_main.parser_commands
    litgpt_main.parser_commands = lambda: [*stock_commands(), "inheritune"]


def main() -> None:
    """`litgpt-inheritune` and `python -m litgpt_inheritune`: set up as `litgpt`'s own main() does before its CLI, so
    all three entry points run a command identically."""
    import torch
    from litgpt.utils import CLI

    torch.set_float32_matmul_precision("high")
    adapt_jsonargparse()
    CLI(commands())


if __name__ == "__main__":
    main()
