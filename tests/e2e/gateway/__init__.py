from tests.conftest import XDS_PROTOS

assert (XDS_PROTOS / ".installed").exists(), (
    f"Envoy's stubs (xds-protos) are installed by `make test` into {XDS_PROTOS}"
)
