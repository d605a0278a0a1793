"""`creditflow weights list|rollback` against a real redis-server."""

from __future__ import annotations

import redis

from creditflow.cli import main
from creditflow.model_weights import ModelWeights
from creditflow.weights_store import current_version, publish


def test_list_marks_the_current_version_and_rollback_moves_it(redis_url: str, capsys) -> None:
    client = redis.Redis.from_url(redis_url)
    for top in ("search", "email"):
        publish(client, ModelWeights("acme", 0, "markov", {top: 1.0, "display": 0.2}, None, "per_channel"))
    assert main(["weights", "list", "--tenant", "acme", "--redis", redis_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  v1") and lines[1].startswith("* v2") and "email 1" in lines[1]
    assert main(["weights", "rollback", "--tenant", "acme", "--to", "1", "--redis", redis_url]) == 0
    assert "scores with weights v1 (markov) again" in capsys.readouterr().out
    assert current_version(client, "acme") == 1
    assert main(["weights", "rollback", "--tenant", "acme", "--to", "9", "--redis", redis_url]) == 2
    assert "no weights version 9; known versions: [1, 2]" in capsys.readouterr().err
    assert main(["weights", "list", "--tenant", "globex", "--redis", redis_url]) == 0
    assert "has no current weights" in capsys.readouterr().out
