//! gRPC through the real binary with a real gRPC server and client
//! (`tonic`; the generated `grpc.health.v1.Health` service gives a unary
//! call, `Check`, and a server-streaming one, `Watch`, without protoc):
//! calls pass with their messages, trailers and the server's own error
//! statuses and metadata intact, are authenticated and limited per call,
//! and every refusal of the gateway reaches the client as the gRPC status
//! of CONTRACT §9, never as a JSON body.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::common;
use common::client::request;
use common::gateway::{free_addr, wait_for_port, Gateway};
use common::h2c::runtime;
use common::upstream::Upstream;

/// Bound for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const API_KEY: &str = "pc_grpc1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The upstream's answers by the `service` field of the request:
/// `fail` is FAILED_PRECONDITION with metadata `x-detail: kept` (after one
/// message on `Watch`), `slow` answers after 3 s, anything else SERVING
/// (`Watch`: SERVING, NOT_SERVING, SERVING).
#[derive(Clone, Default)]
struct Service {
    /// The metadata of every call the upstream received.
    seen: Arc<Mutex<Vec<MetadataMap>>>,
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
    }
}

fn refusal() -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-detail", "kept".parse().unwrap());
    Status::with_metadata(Code::FailedPrecondition, "not today", metadata)
}

type Watch = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Service {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.seen.lock().unwrap().push(req.metadata().clone());
        match req.get_ref().service.as_str() {
            "fail" => Err(refusal()),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(tonic::Response::new(reply(ServingStatus::Serving)))
            }
            _ => Ok(tonic::Response::new(reply(ServingStatus::Serving))),
        }
    }

    type WatchStream = Watch;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Watch>, Status> {
        self.seen.lock().unwrap().push(req.metadata().clone());
        let items = if req.get_ref().service == "fail" {
            vec![Ok(reply(ServingStatus::Serving)), Err(refusal())]
        } else {
            [
                ServingStatus::Serving,
                ServingStatus::NotServing,
                ServingStatus::Serving,
            ]
            .map(|s| Ok(reply(s)))
            .to_vec()
        };
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(items))))
    }
}

/// A tonic server for [`Service`] on its own thread.
fn grpc_upstream() -> (SocketAddr, Service) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Service::default();
    let serving = service.clone();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(HealthServer::new(serving))
                .serve_with_incoming(incoming)
                .await;
        })
    });
    (addr, service)
}

fn keys() -> String {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(API_KEY.as_bytes()));
    format!("[[keys]]\nid = \"grpc1\"\nconsumer = \"grpc-client\"\nhash = \"sha256:{hash}\"\n")
}

/// The routes, one per host, all for the same service path.
fn routes(grpc: SocketAddr, http1: SocketAddr, admin: SocketAddr) -> String {
    let dead = free_addr();
    let route = |host: &str, upstream: &str, extra: &str| {
        format!(
            "[[routes]]\nname = \"{host}\"\nhosts = [\"{host}.test\"]\npath_prefix = \"/grpc.health.v1.Health/\"\n\
             upstream = \"{upstream}\"\n{extra}\n\n"
        )
    };
    let mut text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n\
         [auth.keys]\nkind = \"api_key\"\nkeys_file = \"{{dir}}/keys.toml\"\n\n\
         [upstreams.grpc]\ntargets = [\"{grpc}\"]\nprotocol = \"h2c\"\nread_timeout_ms = 10000\n\n\
         [upstreams.hurried]\ntargets = [\"{grpc}\"]\nprotocol = \"h2c\"\nread_timeout_ms = 300\nretries = 0\n\n\
         [upstreams.http1]\ntargets = [\"{http1}\"]\n\n\
         [upstreams.dead]\ntargets = [\"{dead}\"]\nprotocol = \"h2c\"\nretries = 0\n\n"
    );
    text += &route("open", "grpc", "public = true");
    text += &route(
        "keyed",
        "grpc",
        "auth = [\"keys\"]\nrate_limit = { per = \"consumer\", requests = 3, window_seconds = 60, burst = 3 }",
    );
    text += &route(
        "closed",
        "grpc",
        "public = true\nallow_cidrs = [\"10.0.0.0/8\"]",
    );
    text += &route("getonly", "grpc", "public = true\nmethods = [\"GET\"]");
    text += &route("small", "grpc", "public = true\nmax_body_bytes = 4");
    text += &route("http1", "http1", "public = true");
    text += &route("hurried", "hurried", "public = true");
    text += &route("dead", "dead", "public = true");
    text
}

struct Fixture {
    gw: Gateway,
    listener: SocketAddr,
    admin: SocketAddr,
    service: Service,
    /// An HTTP/1 upstream no gRPC call may reach.
    http1: Upstream,
}

fn start() -> Fixture {
    let (grpc, service) = grpc_upstream();
    let http1 = Upstream::start("http1");
    let admin = free_addr();
    let listener = free_addr();
    let config = format!(
        "[[listeners]]\nname = \"h2c\"\nlisten = \"{listener}\"\nhttp2 = true\n\n{}",
        routes(grpc, http1.addr(), admin)
    );
    let gw = Gateway::start_with_files(&config, &[("keys.toml", &keys())]);
    assert!(wait_for_port(listener, Duration::from_secs(10)));
    Fixture {
        gw,
        listener,
        admin,
        service,
        http1,
    }
}

/// A tonic client connected to the gateway, calling as `host.test`.
async fn client(listener: SocketAddr, host: &str) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{listener}"))
        .unwrap()
        .origin(format!("http://{host}.test").parse().unwrap())
        .connect_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

fn call(service: &str, metadata: &[(&'static str, &str)]) -> Request<HealthCheckRequest> {
    let mut req = Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    for (name, value) in metadata {
        req.metadata_mut().insert(*name, value.parse().unwrap());
    }
    req
}

async fn check(
    client: &mut HealthClient<Channel>,
    req: Request<HealthCheckRequest>,
) -> Result<tonic::Response<HealthCheckResponse>, Status> {
    tokio::time::timeout(CALL_TIMEOUT, client.check(req))
        .await
        .expect("the call ends within its bound")
}

/// The statuses of a `Watch` call's messages, then its final status.
async fn watch(client: &mut HealthClient<Channel>, service: &str) -> (Vec<i32>, Status) {
    let bounded = async {
        let mut stream = match client.watch(call(service, &[])).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => return (Vec::new(), status),
        };
        let mut got = Vec::new();
        for _ in 0..100 {
            match stream.next().await {
                Some(Ok(msg)) => got.push(msg.status),
                Some(Err(status)) => return (got, status),
                None => return (got, Status::ok("")),
            }
        }
        panic!("too many messages")
    };
    tokio::time::timeout(CALL_TIMEOUT, bounded)
        .await
        .expect("the stream ends within its bound")
}

#[test]
fn unary_and_server_streaming_calls_pass_through() {
    let f = start();
    runtime().block_on(async {
        let mut open = client(f.listener, "open").await;
        let resp = check(&mut open, call("", &[("x-auth-subject", "forged")]))
            .await
            .unwrap();
        assert_eq!(resp.get_ref().status, i32::from(ServingStatus::Serving));
        assert!(resp.metadata().get("x-request-id").is_some());

        let (messages, end) = watch(&mut open, "").await;
        let (serving, not) = (
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32,
        );
        assert_eq!(messages, vec![serving, not, serving]);
        assert_eq!(end.code(), Code::Ok, "{end:?}");
    });
    let seen = f.service.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // What the upstream received: the gateway's request id and forwarding
    // headers, not the identity header the client made up.
    assert!(seen[0].get("x-request-id").is_some());
    assert_eq!(seen[0].get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(seen[0].get("x-forwarded-host").unwrap(), "open.test");
    assert!(seen[0].get("x-auth-subject").is_none(), "{:?}", seen[0]);
    assert_eq!(seen[0].get("content-type").unwrap(), "application/grpc");
}

#[test]
fn the_servers_own_errors_and_trailing_metadata_reach_the_client() {
    let f = start();
    runtime().block_on(async {
        let mut open = client(f.listener, "open").await;
        // A unary error: the upstream's Trailers-Only answer, unchanged.
        let status = check(&mut open, call("fail", &[])).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message(), "not today");
        assert_eq!(status.metadata().get("x-detail").unwrap(), "kept");
        // An error after a message: trailers after the data.
        let (messages, end) = watch(&mut open, "fail").await;
        assert_eq!(messages, vec![i32::from(ServingStatus::Serving)]);
        assert_eq!(end.code(), Code::FailedPrecondition, "{end:?}");
        assert_eq!(end.message(), "not today");
        assert_eq!(end.metadata().get("x-detail").unwrap(), "kept");
    });
    // Metrics count calls by the upstream's grpc-status.
    let wanted = "portcullis_grpc_requests_total{grpc_status=\"9\",route=\"open\"} 2";
    let mut metrics = String::new();
    let counted = common::wait_until(Duration::from_secs(5), || {
        metrics = request(f.admin, "GET", "/metrics", &[], None).body_str();
        metrics.contains(wanted)
    });
    assert!(counted, "{metrics}");
}

#[test]
fn calls_are_authenticated_and_rate_limited_one_by_one() {
    let f = start();
    runtime().block_on(async {
        let mut keyed = client(f.listener, "keyed").await;
        let status = check(&mut keyed, call("", &[])).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(status.message(), "missing_credentials");
        // The limit counts calls on one connection, not connections.
        for _ in 0..3 {
            check(&mut keyed, call("", &[("x-api-key", API_KEY)]))
                .await
                .unwrap();
        }
        let status = check(&mut keyed, call("", &[("x-api-key", API_KEY)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.message(), "rate_limited");
        assert!(status.metadata().get("retry-after").is_some());
    });
    let seen = f.service.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].get("x-auth-consumer").unwrap(), "grpc-client");
    assert!(
        seen[0].get("x-api-key").is_none(),
        "the key is not forwarded"
    );
    drop(seen);
    // One access log line per call.
    let lines = f.gw.wait_access_log(5);
    let keyed: Vec<_> = lines.iter().filter(|l| l["route"] == "keyed").collect();
    assert_eq!(keyed.len(), 5, "{lines:?}");
}

#[test]
fn every_refusal_of_the_gateway_is_a_grpc_status() {
    let f = start();
    let long = "a service name longer than four bytes";
    let cases = [
        ("nowhere", "", Code::Unimplemented, "no_route"),
        ("getonly", "", Code::Unimplemented, "method_not_allowed"),
        ("closed", "", Code::PermissionDenied, "forbidden"),
        ("small", long, Code::InvalidArgument, "payload_too_large"),
        ("http1", "", Code::Unavailable, "bad_gateway"),
        ("dead", "", Code::Unavailable, "bad_gateway"),
    ];
    runtime().block_on(async {
        for (host, service, code, message) in cases {
            let mut c = client(f.listener, host).await;
            let status = check(&mut c, call(service, &[])).await.unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (code, message),
                "{host}: {status:?}"
            );
            assert!(
                status.metadata().get("x-request-id").is_some(),
                "{host}: {status:?}"
            );
        }
        // A timeout upstream: the gateway answers DEADLINE_EXCEEDED after
        // the upstream's 300 ms read timeout (the call's own deadline,
        // which tonic enforces too, is far beyond it).
        let mut hurried = client(f.listener, "hurried").await;
        let mut req = call("slow", &[]);
        req.set_timeout(Duration::from_secs(8));
        let status = check(&mut hurried, req).await.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(status.message(), "upstream_timeout");
    });
    // Of all these, only the slow call reached the upstream.
    assert_eq!(f.service.seen.lock().unwrap().len(), 1);
    assert_eq!(f.http1.hits(), 0);
}

/// Refusals a gRPC library would never provoke, sent as raw HTTP/2: a
/// malformed path, an overlong one, an oversized header. Each is still a
/// Trailers-Only INVALID_ARGUMENT, never a JSON body.
#[test]
fn malformed_calls_are_invalid_argument() {
    let f = start();
    let long_path = format!("/grpc.health.v1.Health/{}", "a".repeat(9000));
    let big = "b".repeat(20_000);
    let grpc = ("content-type", "application/grpc");
    let cases = [
        ("/grpc.health.v1.Health/%00", vec![grpc], "bad_request"),
        (long_path.as_str(), vec![grpc], "uri_too_long"),
        (
            "/grpc.health.v1.Health/Check",
            vec![grpc, ("x-big", big.as_str())],
            "headers_too_large",
        ),
    ];
    for (path, headers, message) in cases {
        let r = common::h2c::send(f.listener, "open.test", "POST", path, &headers, None);
        assert_eq!(r.status, 200, "{message}");
        assert_eq!(r.header("grpc-status"), Some("3"), "{message}");
        assert_eq!(r.header("grpc-message"), Some(message));
        assert!(r.ended_with_headers && r.body.is_empty(), "{message}");
    }
    assert!(f.service.seen.lock().unwrap().is_empty());
}
