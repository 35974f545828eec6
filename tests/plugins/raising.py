"""A tiny plugin that fails in every hook it can: the phone must carry on without it."""

from firmware_app import hookimpl


class PluginBroke(RuntimeError):
    pass


@hookimpl
def softphone_incoming_call(call):
    raise PluginBroke("incoming call hook broke")


@hookimpl
def softphone_call_state_changed(call, previous):
    raise PluginBroke("call state hook broke")


@hookimpl
def softphone_phone_state_changed(state, previous):
    raise PluginBroke("phone state hook broke")


@hookimpl
def softphone_registration_changed(registration):
    raise PluginBroke("registration hook broke")


@hookimpl
def softphone_map_input(event, state):
    raise PluginBroke("input mapping hook broke")
