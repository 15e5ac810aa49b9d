"""The layer map of ``minigate``, bottom first: which modules form each layer (tests/test_layers.py explains the
rules and checks them)."""

from __future__ import annotations

__all__ = ["LAYERS", "Layer"]

Layer = tuple[str, dict[str, tuple[str, ...]]]  # (name, {group: modules})

LAYERS: list[Layer] = [
    (
        "core",  # wire structs and errors, token counts, byte formats: no gateway state
        {
            "core": (
                "minigate",
                "minigate.gateway",
                "minigate.gateway.core",
                "minigate.gateway.core.errors",
                "minigate.gateway.core.headers",
                "minigate.gateway.core.sse",
                "minigate.gateway.core.tokens",
                "minigate.gateway.core.wire",
                "minigate.gateway.core.writes",
                "minigate.providers",
                "minigate.providers.base",
                "minigate.providers.chunk_scan",
                "minigate.providers.limits",
                "minigate.providers.shape",
                "minigate.providers.sse",
                "minigate.web.markdown",  # Markdown to safe HTML; the workflows' markdown_render step uses it too
                "minigate_plugins",
            )
        },
    ),
    (
        "config",  # parsing and checking, loading nothing: the config structs, the registries sections are typed by
        {
            "config": (
                "minigate.gateway.config",
                "minigate.gateway.config.resources",
                "minigate.gateway.config.prices",
                "minigate.gateway.config.schema",
                "minigate.gateway.config.sections",
                "minigate.gateway.config.workflow_steps",
                "minigate.gateway.workflow_steps",  # the old import path of the step specs, for plugins
                "minigate.providers.registry",
            )
        },
    ),
    (
        "storage",  # the database: usage rows, keys, conversations, shared cooldowns
        {
            "storage": (
                "minigate.gateway.storage",
                "minigate.gateway.storage._commit",
                "minigate.gateway.storage.audit",
                "minigate.gateway.storage.branches",
                "minigate.gateway.storage.chat_search",
                "minigate.gateway.storage.conversations",
                "minigate.gateway.storage.cooldowns",
                "minigate.gateway.storage.counters",
                "minigate.gateway.storage.db",
                "minigate.gateway.storage.images",
                "minigate.gateway.storage.jobs",
                "minigate.gateway.storage.key_policy",
                "minigate.gateway.storage.keys",
                "minigate.gateway.storage.logins",
                "minigate.gateway.storage.responses",
                "minigate.gateway.storage.sql",
                "minigate.gateway.storage.syncing",
                "minigate.gateway.storage.tables",
                "minigate.gateway.storage.usage",
                "minigate.gateway.storage.usage_query",
                "minigate.gateway.storage.users",
            )
        },
    ),
    (
        "providers",  # the provider implementations
        {
            "providers": (
                "minigate.providers.anthropic",
                "minigate.providers.anthropic_answer",
                "minigate.providers.anthropic_request",
                "minigate.providers.fake",
                "minigate.providers.netguard",
                "minigate.providers.onnx",
                "minigate.providers.onnx.cli",
                "minigate.providers.onnx.config",
                "minigate.providers.onnx.convert",
                "minigate.providers.onnx.embed_export",
                "minigate.providers.onnx.embed_mapping",
                "minigate.providers.onnx.embed_model",
                "minigate.providers.onnx.embed_provider",
                "minigate.providers.onnx.embed_pull",
                "minigate.providers.onnx.device_choice",
                "minigate.providers.onnx.devices",
                "minigate.providers.onnx.engine",
                "minigate.providers.onnx.gguf",
                "minigate.providers.onnx.hub",
                "minigate.providers.onnx.hub_errors",
                "minigate.providers.onnx.openai_mapping",
                "minigate.providers.onnx.placement",
                "minigate.providers.onnx.precision",
                "minigate.providers.onnx.prefix_cache",
                "minigate.providers.onnx.progress",
                "minigate.providers.onnx.prompt",
                "minigate.providers.onnx.protocol",
                "minigate.providers.onnx.provider",
                "minigate.providers.onnx.pull",
                "minigate.providers.onnx.scheduler",
                "minigate.providers.onnx.store",
                "minigate.providers.onnx.store_child",
                "minigate.providers.onnx.stream",
                "minigate.providers.onnx.toolcalls",
                "minigate.providers.onnx.tools",
                "minigate.providers.onnx.toolspec",
                "minigate.providers.onnx.wheel",
                "minigate.providers.onnx.worker",
                "minigate.providers.onnx.engine_host",
                "minigate.providers.onnx.engine_link",
                "minigate.providers.onnx.store_ops",
                "minigate.providers.openai_compat",
                "minigate.providers.openai_responses",
                "minigate.providers.upstream",
            )
        },
    ),
    (
        "plugins",  # the hook specs and the loader, which holds the provider registry plugins extend
        {
            "plugins": (
                "minigate.gateway.plugins",
                "minigate.gateway.plugins.hookspecs",
                "minigate.gateway.plugins.loader",
            )
        },
    ),
    (
        "built-in plugins",  # plugins like any other: they use the plugin API
        {
            "built-in plugins": (
                "minigate.gateway.plugins.builtin_steps",
                "minigate_plugins.prompt_limit",
                "minigate_plugins.redact",
                "minigate.providers.builtins",
            )
        },
    ),
    (
        "routing",  # routes, cooldowns and the fallback chain
        {
            "routing": (
                "minigate.gateway.routing",
                "minigate.gateway.routing.chain",
                "minigate.gateway.routing.cooldowns",
                "minigate.gateway.routing.groups",
                "minigate.gateway.routing.routes",
            )
        },
    ),
    (
        "operations",  # what the request path records to: metrics, request ids and log lines, logs, the drain
        {
            "operations": (
                "minigate.gateway.ops",
                "minigate.gateway.ops.drain",
                "minigate.gateway.ops.limits",
                "minigate.gateway.ops.logs",
                "minigate.gateway.ops.metrics",
                "minigate.gateway.ops.metrics_share",
                "minigate.gateway.ops.monitor",
                "minigate.gateway.ops.observe",
                "minigate.gateway.ops.refusals",
            )
        },
    ),
    (
        "runtime",  # the running gateway, and what changes it: config reloads, local model management, admin jobs
        {
            "runtime": (
                "minigate.gateway.runtime",
                "minigate.gateway.runtime.audit",
                "minigate.gateway.runtime.gateway",
                "minigate.gateway.runtime.jobs",
                "minigate.gateway.runtime.manage",
                "minigate.gateway.runtime.reload",
            )
        },
    ),
    (
        "serving",  # one call along its chain, as typed events
        {
            "serving": (
                "minigate.gateway.serving",
                "minigate.gateway.serving.events",
                "minigate.gateway.serving.passthrough",
                "minigate.gateway.serving.proxy",
                "minigate.gateway.serving.streaming",
                "minigate.gateway.serving.workflows",
            )
        },
    ),
    (
        "protocols",  # wire protocols translated onto chat completions: their requests in, their frames out
        {
            "protocols": (
                "minigate.gateway.protocols",
                "minigate.gateway.protocols.anthropic",
                "minigate.gateway.protocols.anthropic_out",
                "minigate.gateway.protocols.native",
                "minigate.gateway.protocols.responses",
                "minigate.gateway.protocols.responses_out",
            )
        },
    ),
    (
        "edge",  # the HTTP API and the web UI, side by side: neither imports the other
        {
            "http": (
                "minigate.gateway.http",
                "minigate.gateway.http.admin",
                "minigate.gateway.http.admin_json",
                "minigate.gateway.http.admin_keys",
                "minigate.gateway.http.admin_prices",
                "minigate.gateway.http.admin_usage",
                "minigate.gateway.http.admin_users",
                "minigate.gateway.http.api",
                "minigate.gateway.http.audit",
                "minigate.gateway.http.limits",
                "minigate.gateway.http.messages",
                "minigate.gateway.http.openapi",
                "minigate.gateway.http.responses",
                "minigate.gateway.http.ws",
            ),
            "web": (
                "minigate.web",
                "minigate.web.adapter",
                "minigate.web.api_docs",
                "minigate.web.assets",
                "minigate.web.audit",
                "minigate.web.auth",
                "minigate.web.chains",
                "minigate.web.charts",
                "minigate.web.chat",
                "minigate.web.chat_images",
                "minigate.web.chat_branch",
                "minigate.web.chat_export",
                "minigate.web.chat_send",
                "minigate.web.chat_stream",
                "minigate.web.forms",
                "minigate.web.key_policy",
                "minigate.web.keys",
                "minigate.web.login",
                "minigate.web.models",
                "minigate.web.render",
                "minigate.web.sessions",
                "minigate.web.state",
                "minigate.web.usage",
                "minigate.web.users",
            ),
        },
    ),
    (
        "app",  # the one create_app, and the command line that runs it
        {
            "app": (
                "minigate.gateway.app",
                "minigate.gateway.cli",
                "minigate.gateway.supervisor",
                "minigate.gateway.keys_cli",
                "minigate.gateway.models_cli",
                "minigate.gateway.users_cli",
            )
        },
    ),
]
