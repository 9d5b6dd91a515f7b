"""How the Celery app takes TLS from CHARRNN_REDIS_URL (the worker's one setting): the URL's
ssl_cert_reqs and ssl_ca_certs reach kombu's connection as they are, and a rediss:// URL without
them verifies the server's certificate instead of kombu's default of accepting any. (The same
URL against a real TLS Redis across hosts: tests/test_hosts.py.)"""

import ssl

from worker.app import make_app


def broker_ssl(url: str):
    with make_app(url).connection_for_write() as conn:
        return conn.ssl


def test_rediss_url_with_a_ca_passes_it_to_the_broker_connection():
    url = "rediss://:pw@10.0.0.5:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/certs/ca.crt"
    assert broker_ssl(url) == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/certs/ca.crt"}


def test_rediss_url_without_options_still_verifies_the_certificate():
    assert broker_ssl("rediss://:pw@10.0.0.5:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_rediss_url_may_still_ask_for_no_verification_explicitly():
    assert broker_ssl("rediss://:pw@10.0.0.5:6380/0?ssl_cert_reqs=none") == {
        "ssl_cert_reqs": ssl.CERT_NONE
    }


def test_plain_redis_url_has_no_tls():
    assert not broker_ssl("redis://:pw@10.0.0.5:6379/0")
