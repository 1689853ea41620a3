import asgiref


def test_version_mirrors_upstream_api_level() -> None:
    assert asgiref.__version__ == "3.13.0"
