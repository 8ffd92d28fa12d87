//! Generates typed ttrpc clients and servers for the services shims speak.
//!
//! prost-build accepts one service generator, so [`Split`] sends the ttrpc
//! packages here and every other service to tonic's generator.

use std::fmt::Write;

use prost_build::{Service, ServiceGenerator};

/// Routes each service to the ttrpc or the gRPC generator by package.
pub struct Split {
    grpc: Box<dyn ServiceGenerator>,
    ttrpc_packages: &'static [&'static str],
}

impl Split {
    pub fn new(grpc: Box<dyn ServiceGenerator>, ttrpc_packages: &'static [&'static str]) -> Self {
        Self { grpc, ttrpc_packages }
    }
}

impl ServiceGenerator for Split {
    fn generate(&mut self, service: Service, buf: &mut String) {
        if self.ttrpc_packages.contains(&service.package.as_str()) {
            generate_ttrpc(&service, buf);
        } else {
            self.grpc.generate(service, buf);
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        self.grpc.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.grpc.finalize_package(package, buf);
    }
}

/// A Rust type as seen from inside the generated `<service>_ttrpc` module.
fn outer_type(rust_type: &str) -> String {
    if rust_type == "()" || rust_type.starts_with("::") {
        rust_type.to_string()
    } else {
        format!("super::{rust_type}")
    }
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn generate_ttrpc(service: &Service, buf: &mut String) {
    let full = format!("{}.{}", service.package, service.proto_name);
    let module = format!("{}_ttrpc", snake(&service.name));
    let client = format!("{}Client", service.name);
    let server = format!("{}Server", service.name);
    let name = &service.name;

    let _ = writeln!(buf, "/// ttrpc client and server for `{full}`.");
    let _ = writeln!(buf, "pub mod {module} {{");
    let _ = writeln!(buf, "    /// The service name on the wire.");
    let _ = writeln!(buf, "    pub const SERVICE: &str = \"{full}\";");

    // Client.
    let _ = writeln!(buf, "    /// Typed client over one ttrpc connection.");
    let _ = writeln!(buf, "    #[derive(Clone, Debug)]");
    let _ = writeln!(buf, "    pub struct {client} {{ inner: crate::ttrpc::Client }}");
    let _ = writeln!(buf, "    impl {client} {{");
    let _ = writeln!(buf, "        /// Wraps a connected ttrpc client.");
    let _ = writeln!(
        buf,
        "        pub fn new(inner: crate::ttrpc::Client) -> Self {{ Self {{ inner }} }}"
    );
    let _ = writeln!(buf, "        /// The underlying connection.");
    let _ = writeln!(
        buf,
        "        pub fn connection(&self) -> &crate::ttrpc::Client {{ &self.inner }}"
    );
    for m in &service.methods {
        let input = outer_type(&m.input_type);
        let output = outer_type(&m.output_type);
        let _ = writeln!(buf, "        /// Calls `{full}/{}`.", m.proto_name);
        let _ = writeln!(
            buf,
            "        pub async fn {}(&self, options: &crate::ttrpc::CallOptions, request: &{input}) -> ::std::result::Result<{output}, ::tonic::Status> {{",
            m.name
        );
        let _ = writeln!(
            buf,
            "            self.inner.unary(SERVICE, \"{}\", options, request).await",
            m.proto_name
        );
        let _ = writeln!(buf, "        }}");
    }
    let _ = writeln!(buf, "    }}");

    // Server trait with Unimplemented defaults.
    let _ = writeln!(
        buf,
        "    /// Server side of `{full}`: methods left out answer Unimplemented."
    );
    let _ = writeln!(buf, "    pub trait {name}: Send + Sync + 'static {{");
    for m in &service.methods {
        let input = outer_type(&m.input_type);
        let output = outer_type(&m.output_type);
        let _ = writeln!(buf, "        /// Serves `{full}/{}`.", m.proto_name);
        let _ = writeln!(
            buf,
            "        fn {}(&self, _context: crate::ttrpc::RequestContext, _request: {input}) -> impl ::std::future::Future<Output = ::std::result::Result<{output}, ::tonic::Status>> + Send {{",
            m.name
        );
        let _ = writeln!(
            buf,
            "            async {{ Err(::tonic::Status::unimplemented(\"{full}/{} is not implemented\")) }}",
            m.proto_name
        );
        let _ = writeln!(buf, "        }}");
    }
    let _ = writeln!(buf, "    }}");

    // Dispatcher.
    let _ = writeln!(
        buf,
        "    /// Adapts a [`{name}`] implementation to the ttrpc server's dispatcher."
    );
    let _ = writeln!(buf, "    pub struct {server}<T>(pub ::std::sync::Arc<T>);");
    let _ = writeln!(buf, "    impl<T: {name}> crate::ttrpc::Service for {server}<T> {{");
    let _ = writeln!(buf, "        fn name(&self) -> &'static str {{ SERVICE }}");
    let _ = writeln!(
        buf,
        "        fn call(&self, method: &str, context: crate::ttrpc::RequestContext, payload: ::bytes::Bytes) -> crate::ttrpc::ResponseFuture {{"
    );
    let _ = writeln!(buf, "            let inner = ::std::sync::Arc::clone(&self.0);");
    let _ = writeln!(buf, "            match method {{");
    for m in &service.methods {
        let input = outer_type(&m.input_type);
        let _ = writeln!(buf, "                \"{}\" => Box::pin(async move {{", m.proto_name);
        let _ = writeln!(
            buf,
            "                    let request: {input} = crate::ttrpc::decode_payload(&payload)?;"
        );
        let _ = writeln!(
            buf,
            "                    let response = inner.{}(context, request).await?;",
            m.name
        );
        let _ = writeln!(buf, "                    Ok(crate::ttrpc::encode_payload(&response))");
        let _ = writeln!(buf, "                }}),");
    }
    let _ = writeln!(
        buf,
        "                other => {{ let message = format!(\"method {{other}} of {full}\"); Box::pin(async move {{ Err(::tonic::Status::unimplemented(message)) }}) }}"
    );
    let _ = writeln!(buf, "            }}");
    let _ = writeln!(buf, "        }}");
    let _ = writeln!(buf, "    }}");
    let _ = writeln!(buf, "}}");
}
