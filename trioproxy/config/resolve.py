"""Resolve names once, at config load: targets carry their model, models their provider.

After :func:`resolve`, nothing on the request path looks a model or a provider up by name:
``target.spec`` is the model (prices, limits, deployment) and ``target.spec.endpoint`` its
provider (kind, base URL, key). Runs after validation, so every name exists.
"""

from __future__ import annotations

import dataclasses

from trioproxy.config.model import (
    DEFAULT_FALLBACK_STATUSES,
    Chain,
    ModelConfig,
    RouteConfig,
    Settings,
    Target,
)
from trioproxy.config.pricing import prices_of, with_default_prices


def resolve(settings: Settings) -> Settings:
    """Also fills each model's unset bucket prices by its provider's rules (:mod:`.pricing`)
    and attaches its exact prices."""
    models = {name: _model(m, settings) for name, m in settings.models.items()}
    routes = {name: _route(r, models) for name, r in settings.routes.items()}
    model_routes = {
        name: RouteConfig(
            name=name,
            chains={"default": Chain("model", (Target(model=name, resolved=m),))},
            fallback_statuses=DEFAULT_FALLBACK_STATUSES,
        )
        for name, m in models.items()
    }
    return dataclasses.replace(settings, models=models, routes=routes, model_routes=model_routes)


def _model(model: ModelConfig, settings: Settings) -> ModelConfig:
    """``model`` with its provider, its default bucket prices and its exact prices."""
    priced = with_default_prices(model, settings.providers[model.provider].kind)
    resolved = dataclasses.replace(priced, resolved_provider=settings.providers[model.provider])
    # on the copy made just above, before anything else holds it (init=False: see the field)
    object.__setattr__(resolved, "resolved_prices", prices_of(resolved))
    return resolved


def target_for(models: dict[str, ModelConfig] | Settings, t: Target) -> Target:
    table = models.models if isinstance(models, Settings) else models
    return dataclasses.replace(t, resolved=table[t.model])


def _route(route: RouteConfig, models: dict[str, ModelConfig]) -> RouteConfig:
    chains = {
        name: Chain(c.name, tuple(target_for(models, t) for t in c.targets))
        for name, c in route.chains.items()
    }
    return dataclasses.replace(route, chains=chains)


__all__ = ["resolve", "target_for"]
