"""The project's exceptions: one root, one class per situation worth catching.

Every message says what failed, where (stream, consumer, config key), and
what to do next. Errors from the JetStream API keep the server's err_code.
"""

from __future__ import annotations


class EventBusError(Exception):
    """Root of every error this project raises on purpose. Catch this at a CLI edge."""


class ConfigError(EventBusError):
    """Stack or resource configuration is invalid. Raised before anything reaches the server.

    `key` names the config key or field at fault.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class NatsConnectionError(EventBusError):
    """No NATS server could be reached with the given servers and credentials, or it stopped answering."""


class NoStreamForSubject(NatsConnectionError):
    """A publish got no responders: no stream stores its subject (or JetStream is unreachable)."""


class DataLossRefused(EventBusError):
    """A delete or replacement would destroy stored messages or consumer state, and the
    stack has not opted in for that object by name (`allowDataLoss`)."""


class JetStreamAPIError(EventBusError):
    """The JetStream API answered with an error. `err_code` is the server's own code."""

    hint = ""

    def __init__(
        self,
        description: str,
        *,
        err_code: int = 0,
        code: int = 0,
        stream: str | None = None,
        consumer: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.description = description
        self.err_code = err_code
        self.code = code
        self.stream = stream
        self.consumer = consumer
        if hint is not None:
            self.hint = hint
        where = f"stream {stream}" if stream else "JetStream"
        if consumer:
            where += f", consumer {consumer}"
        text = f"{where}: {self.reason}"
        if self.hint:
            text += f". {self.hint}"
        super().__init__(text)


    @property
    def reason(self) -> str:
        """The server's description with its err_code, without the stream and consumer."""
        return f"{self.description} (err_code {self.err_code})"


class StreamNotFound(JetStreamAPIError):
    """err_code 10059."""


class ConsumerNotFound(JetStreamAPIError):
    """err_code 10014."""


class SubjectOverlap(JetStreamAPIError):
    """err_code 10065: the subjects overlap with those of another stream."""

    hint = (
        "Another stream owns one of these subjects; release them there first, or list that "
        "stream in this stack's topology so the tool can hand the subjects over"
    )


class StreamNameInUse(JetStreamAPIError):
    """err_code 10058: a stream with this name exists with a different configuration."""


class ImmutableFieldChange(JetStreamAPIError):
    """err_code 10052 (streams), 10012 (consumers) or 10055 (mirror): the server cannot
    change this field in place; the object must be replaced."""

    hint = "This field cannot change in place: the object has to be replaced (see allowDataLoss)"


class ReplicasUnsupported(JetStreamAPIError):
    """err_code 10074: replicas > 1 on a server that is not clustered."""

    hint = "Use replicas 1 on a single server, or point natsUrl at a JetStream cluster"


class PedanticRejection(JetStreamAPIError):
    """The server refused, in pedantic mode, a config it would otherwise have adjusted."""

    hint = "Make the config explicit and consistent (the server would have rewritten it)"


_BY_ERR_CODE: dict[int, type[JetStreamAPIError]] = {
    10059: StreamNotFound,
    10014: ConsumerNotFound,
    10065: SubjectOverlap,
    10058: StreamNameInUse,
    10052: ImmutableFieldChange,
    10012: ImmutableFieldChange,
    10055: ImmutableFieldChange,
    10074: ReplicasUnsupported,
    10157: PedanticRejection,
}


def api_error(error: dict, *, stream: str | None = None, consumer: str | None = None) -> JetStreamAPIError:
    """Build the typed error for a JetStream API `error` object."""
    err_code = int(error.get("err_code", 0))
    description = str(error.get("description", "unknown error"))
    cls = _BY_ERR_CODE.get(err_code, JetStreamAPIError)
    if description.startswith("pedantic mode"):
        cls = PedanticRejection
    return cls(description, err_code=err_code, code=int(error.get("code", 0)), stream=stream, consumer=consumer)


def from_nats(exc: Exception, *, stream: str | None = None, consumer: str | None = None) -> JetStreamAPIError:
    """The typed error for one of nats-py's own JetStream API errors (`nats.js.errors.APIError`).

    nats-py raises those from its JetStreamManager and JetStreamContext; mapping them here
    gives the management client and the service binding one vocabulary keyed on err_code.
    """
    return api_error({"err_code": getattr(exc, "err_code", None) or 0, "code": getattr(exc, "code", None) or 0,
                      "description": getattr(exc, "description", None) or type(exc).__name__},
                     stream=stream, consumer=consumer)
