//! The source side against real servers (tests/support): connecting, telling servers apart,
//! discovering databases, and the errors an operator sees.

mod support;

use std::time::Duration;

use kvferry::server::endpoint::Endpoint;
use kvferry::server::{connect, describe, ServerKind};
use support::{Kind, Server};

#[test]
fn describes_the_server_and_its_databases() {
    let s = Server::source();
    let mut c = connect(&Endpoint::plain(&s.url()), Duration::from_secs(5)).unwrap();
    let d = describe(&s.url(), &mut c).unwrap();
    match s.kind {
        Kind::Redis => {
            assert_eq!(d.kind, ServerKind::Redis);
            assert_eq!(
                d.databases,
                (0..16).collect::<Vec<_>>(),
                "redis-server's default 16 databases"
            );
        }
        Kind::Pika => assert!(matches!(d.kind, ServerKind::Pika(..)), "{d:?}"),
        Kind::Kvrocks => assert_eq!(d.databases, vec![0]),
    }
    assert!(
        d.software()
            .starts_with(if s.kind == Kind::Pika { "pika " } else { "redis " }),
        "{}",
        d.software()
    );
}

#[test]
fn databases_follow_the_servers_configuration() {
    let s = Server::start(Kind::Redis, &[("databases", "3")]);
    let mut c = connect(&Endpoint::plain(&s.url()), Duration::from_secs(5)).unwrap();
    assert_eq!(describe(&s.url(), &mut c).unwrap().databases, vec![0, 1, 2]);
}

#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let s = Server::start(Kind::Redis, &[("requirepass", "right-secret")]);
    let url = format!("redis://:wrong-secret@127.0.0.1:{}", s.port);
    let e = connect(&Endpoint::plain(&url), Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.starts_with(&format!("redis://127.0.0.1:{}: authentication failed", s.port)),
        "{e}"
    );
    assert!(
        !e.contains("wrong-secret") && !e.contains("right-secret"),
        "a password leaked: {e}"
    );
    let ok = format!("redis://:right-secret@127.0.0.1:{}", s.port);
    assert!(connect(&Endpoint::plain(&ok), Duration::from_secs(5)).is_ok());
}

#[test]
fn missing_password_says_one_is_needed() {
    let s = Server::start(Kind::Redis, &[("requirepass", "pw")]);
    let e = connect(&Endpoint::plain(&s.url()), Duration::from_secs(5))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("requires a password"), "{e}");
}

#[test]
fn unreachable_server_names_the_source() {
    // Port 1 on loopback: nothing listens there, and no test binds it (they use ephemeral ports,
    // so a port freed a moment ago could be taken by a concurrent test).
    let port = 1;
    let e = connect(
        &Endpoint::plain(&format!("redis://127.0.0.1:{port}")),
        Duration::from_secs(2),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.starts_with(&format!("redis://127.0.0.1:{port}: connection refused")),
        "{e}"
    );
}

#[test]
fn a_peer_that_is_not_redis_is_reported() {
    // A TCP server that answers with HTTP: the wrong port, as an operator might give.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let e = connect(
        &Endpoint::plain(&format!("redis://127.0.0.1:{port}")),
        Duration::from_secs(2),
    )
    .err()
    .unwrap()
    .to_string();
    t.join().unwrap();
    assert!(e.starts_with(&format!("redis://127.0.0.1:{port}: ")), "{e}");
    assert!(e.contains("Redis protocol") || e.contains("cannot connect"), "{e}");
}
