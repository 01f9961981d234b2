"""SAS URLs are HTTPS-only wherever the account speaks HTTPS (signed offline)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient

from shared.storage.sas import SasIssuer

KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5"


@pytest.mark.parametrize(
    ("account_url", "protocol"),
    [
        ("https://timbre.blob.core.windows.net", ["https"]),
        ("http://127.0.0.1:10000/devstoreaccount1", None),  # Azurite: plain HTTP
    ],
)
def test_blob_and_container_urls_are_https_only_where_the_account_is(
    account_url: str, protocol: list[str] | None
) -> None:
    service = BlobServiceClient(
        account_url, credential={"account_name": "timbre", "account_key": KEY}
    )
    issuer = SasIssuer(service)

    for signed in (
        issuer.blob_url(
            "synthesis-jobs", "t/j/result.mp3", permission="r", lifetime=timedelta(hours=1)
        ),
        issuer.container_url("trn-x", permission="rl", lifetime=timedelta(hours=1)),
    ):
        query = parse_qs(urlsplit(signed.url).query)
        assert query.get("spr") == protocol
        assert query["sp"] in (["r"], ["rl"])
