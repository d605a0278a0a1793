"""Turn a ``--source`` string into a partitioned Bytewax source.

Forms:

- ``file:PATH[,PATH...]`` JSONL (one event per line) or Avro container files;
  ``file:big.jsonl?splits=4`` cuts one file into 4 byte ranges for 4 processes.
- ``redis://HOST:PORT/DB?streams=a,b[&stop_at_end=1][&trim=0][&trim_every_s=10][&batch=400][&gather_ms=50]``
  Redis Streams, one partition per stream; with recovery on, each stream is
  trimmed behind the oldest position a resume could need (``trim=0`` keeps all);
  ``batch``: entries read per stream at a time (smaller: less latency under load,
  larger: a little more throughput when draining a backlog); ``gather_ms``: a caught-up
  stream is read again at the next multiple of this many milliseconds, with the
  others, so events cross the flow in larger waves (0: at once; ``sources.redis_streams``).
- ``kafka://BROKER[,BROKER]/TOPIC[,TOPIC]`` Kafka through Bytewax's connector.
- ``generator:seed=1,persons=1000[,partitions=2,bad_fraction=0.01]`` seeded
  synthetic traffic.

>>> parse_source_spec("generator:seed=7,persons=10").kind
'generator'
>>> parse_source_spec("nonsense")
Traceback (most recent call last):
...
creditflow.errors.CreditflowError: unknown --source 'nonsense'; use file:PATH, redis://HOST:PORT/DB?streams=a,b, kafka://BROKERS/TOPICS or generator:seed=N,persons=N
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bytewax.inputs import Source

from creditflow.errors import CreditflowError
from creditflow.events import RawRecord


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    text: str

    @property
    def ends(self) -> bool:
        """Whether the source ends by itself (files, the generator, Redis with ``stop_at_end``).

        >>> parse_source_spec("redis://h:6379/0?streams=a&stop_at_end=1").ends, parse_source_spec("file:x").ends
        (True, True)
        >>> parse_source_spec("redis://h:6379/0?streams=a").ends
        False
        """
        if self.kind == "redis":
            return parse_qs(urlsplit(self.text).query).get("stop_at_end", ["0"])[0] in ("1", "true", "yes")
        return self.kind in ("file", "generator")

    def adapter(self) -> Callable[[Any], RawRecord] | None:
        """How the source's items become ``RawRecord`` (None: they already are)."""
        if self.kind == "kafka":
            from sources.kafka import kafka_message_to_record

            return kafka_message_to_record
        return None

    def build(self, recovery_dir: Path | None = None, process: tuple[int, int] | None = None) -> Source[Any]:
        """Construct the source (nothing connects until the flow runs).

        With a ``recovery_dir``, Redis streams are trimmed behind the oldest
        position a resume could need, unless the spec says ``trim=0``. With
        ``process`` (``(index, processes)`` of a cluster), this process reads
        only its share of the Redis streams or Kafka partitions (their sources' ``process``).
        """
        if self.kind == "file":
            from sources.files import FileSource

            body = self.text[len("file:") :]
            path_part, _, query = body.partition("?")
            splits = int(parse_qs(query).get("splits", ["1"])[0])
            return FileSource([p for p in path_part.split(",") if p], splits_per_file=splits)
        if self.kind == "redis":
            from sources.redis_streams import DEFAULT_BATCH, DEFAULT_GATHER_MS, RedisStreamSource

            url = urlsplit(self.text)
            q = parse_qs(url.query)
            streams = [s for s in q.get("streams", ["events"])[0].split(",") if s]
            base = url._replace(query="").geturl()
            stop = self.ends
            trim = q.get("trim", ["1"])[0] not in ("0", "false", "no")
            trim_every = float(q.get("trim_every_s", ["10"])[0])
            batch = q.get("batch", [str(DEFAULT_BATCH)])[0]
            if not batch.isdigit() or int(batch) < 1:
                raise CreditflowError(
                    f"--source {self.text!r}: batch={batch!r} is not a whole number of entries >= 1 "
                    f"(e.g. batch={DEFAULT_BATCH})"
                )
            gather = q.get("gather_ms", [str(DEFAULT_GATHER_MS)])[0]
            if not gather.isdigit():
                raise CreditflowError(
                    f"--source {self.text!r}: gather_ms={gather!r} is not a whole number of milliseconds >= 0 "
                    f"(e.g. gather_ms={DEFAULT_GATHER_MS}, or 0 to read again at once)"
                )
            return RedisStreamSource(
                base,
                streams,
                batch_size=int(batch),
                gather_ms=int(gather),
                stop_at_end=stop,
                trim_store=recovery_dir if trim else None,
                trim_every_s=trim_every,
                process=process,
            )
        if self.kind == "kafka":
            from sources.kafka import kafka_source

            url = urlsplit(self.text)
            brokers = url.netloc.split(",")
            topics = [t for t in url.path.lstrip("/").split(",") if t]
            if not topics:
                raise CreditflowError(f"--source {self.text!r} names no topic; use kafka://BROKERS/TOPIC[,TOPIC]")
            return kafka_source(brokers, topics, process=process)
        from sources.generator import GeneratorSource

        opts = _kv(self.text[len("generator:") :])
        return GeneratorSource(
            seed=int(opts.get("seed", 1)),
            n_persons=int(opts.get("persons", 1000)),
            partitions=int(opts.get("partitions", 1)),
            bad_fraction=float(opts.get("bad_fraction", 0.0)),
        )


def _kv(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            raise CreditflowError(f"generator option {part!r} is not key=value (e.g. generator:seed=1,persons=1000)")
        out[key.strip()] = value.strip()
    return out


def parse_source_spec(text: str) -> SourceSpec:
    """Check the form of a ``--source`` string; raise with the accepted forms if unknown."""
    for prefix, kind in (
        ("file:", "file"),
        ("redis://", "redis"),
        ("rediss://", "redis"),
        ("kafka://", "kafka"),
        ("generator:", "generator"),
    ):
        if text.startswith(prefix):
            return SourceSpec(kind, text)
    raise CreditflowError(
        f"unknown --source {text!r}; use file:PATH, redis://HOST:PORT/DB?streams=a,b, "
        "kafka://BROKERS/TOPICS or generator:seed=N,persons=N"
    )
