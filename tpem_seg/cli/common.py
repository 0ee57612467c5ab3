"""What every command module shares: the command line as the user could retype it, for provenance."""

from __future__ import annotations

import shlex

import typer


def command_line(ctx: typer.Context) -> str:
    """The command as the user could retype it: the arguments and every option not left at its default."""
    names, parent = [], ctx
    while parent.parent is not None:  # the root's name is however Python was started; use the script's
        names.insert(0, parent.info_name)
        parent = parent.parent
    words = ["tpem-seg", *names]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name).name == "DEFAULT":
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            words.append(str(value))
        elif getattr(param, "is_flag", False) and param.secondary_opts:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        elif getattr(param, "is_flag", False):
            words.append(param.opts[0])
        elif value is not None:
            words += [max(param.opts, key=len), str(value)]
    return shlex.join(words)
