//! An Arrow Flight server on loopback, the baseline users already know: DoPut stores a stream
//! of FlightData in memory under its descriptor path, DoGet streams it back, and the action
//! `drop` (body: the path) forgets one, as Baton's delete does. Configured for throughput as a
//! user tuning it would: HTTP/2 flow control adaptive (BDP-probing) on both ends, from 16 MiB
//! stream and 32 MiB connection windows, TCP_NODELAY, no message size limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use tonic::{Request, Response, Status, Streaming};

/// The action that forgets a stored stream (its body: the descriptor path, `/`-joined).
pub const DROP: &str = "drop";

/// HTTP/2 windows of both ends, before adaptive flow control grows them.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// The connection's window.
pub const CONNECTION_WINDOW: u32 = 32 << 20;

type Stored = Arc<Mutex<HashMap<Vec<u8>, Vec<FlightData>>>>;

/// A Flight service holding streams in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryFlight {
    stored: Stored,
}

fn unimplemented<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!("{what} is not part of the benchmark")))
}

#[tonic::async_trait]
impl FlightService for MemoryFlight {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented("handshake")
    }
    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented("list_flights")
    }
    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        unimplemented("get_flight_info")
    }
    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        unimplemented("poll_flight_info")
    }
    async fn get_schema(&self, _: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        unimplemented("get_schema")
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner().ticket.to_vec();
        let items = self
            .stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ticket)
            .cloned()
            .ok_or_else(|| Status::not_found("no such flight"))?;
        Ok(Response::new(stream::iter(items.into_iter().map(Ok)).boxed()))
    }

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let mut incoming = request.into_inner();
        let mut items = Vec::new();
        let mut name = None;
        while let Some(data) = incoming.message().await? {
            if name.is_none() {
                name = data.flight_descriptor.as_ref().map(|d| d.path.join("/").into_bytes());
            }
            items.push(data);
        }
        let name = name.ok_or_else(|| Status::invalid_argument("the first message needs a descriptor path"))?;
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).insert(name, items);
        Ok(Response::new(stream::once(async { Ok(PutResult::default()) }).boxed()))
    }

    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented("do_exchange")
    }
    async fn do_action(&self, request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != DROP {
            return unimplemented(&format!("action {:?}", action.r#type));
        }
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).remove(&action.body[..]);
        Ok(Response::new(stream::empty().boxed()))
    }
    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented("list_actions")
    }
}

/// Starts a Flight server on 127.0.0.1; returns its address.
pub async fn start() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = FlightServiceServer::new(MemoryFlight::default())
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_adaptive_window(Some(true))
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    Ok(addr)
}
