"""The Temporal client every process uses: pydantic payloads, encrypted, failures included."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime

from runtime.codec import EncryptionCodec
from runtime.settings import Settings
from runtime.telemetry import tracing_interceptors


def data_converter(key: bytes) -> DataConverter:
    """Pydantic models as payloads, sealed by the codec; failure messages encoded too."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(key),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def converter_for(settings: Settings) -> DataConverter:
    return data_converter(settings.payload_key())


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    """A client of the configured namespace, on ``runtime`` (its metrics), traced when
    ``settings.otel`` says so."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=converter_for(settings),
        runtime=runtime,
        interceptors=tracing_interceptors(settings.otel),
    )
