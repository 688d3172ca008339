//! Running as a Windows service (`bindwatch run --service`, installed with
//! `sc.exe create`, see README): the service control manager's stop ends
//! the event loop as Ctrl-C does.

use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::{define_windows_service, service_dispatcher};

pub const SERVICE_NAME: &str = "bindwatch";

static STOP: OnceLock<Notify> = OnceLock::new();
static BODY: OnceLock<Box<dyn Fn() -> i32 + Send + Sync>> = OnceLock::new();

fn stop() -> &'static Notify {
    STOP.get_or_init(Notify::new)
}

/// Resolves when the service manager asks the service to stop.
pub async fn stop_requested() {
    stop().notified().await
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_args: Vec<OsString>) {
    let handler = |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            stop().notify_waiters();
            stop().notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(status) = service_control_handler::register(SERVICE_NAME, handler) else {
        return;
    };
    let report = |state, accept, code| {
        let _ = status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: accept,
            exit_code: ServiceExitCode::Win32(code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        });
    };
    report(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
        0,
    );
    let code = BODY.get().map_or(1, |body| body());
    report(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        code as u32,
    );
}

/// Hands the process to the service control manager, which runs `body`
/// (the daemon) on its service thread; returns when the service stopped.
pub fn run_as_service(body: impl Fn() -> i32 + Send + Sync + 'static) -> std::io::Result<()> {
    let _ = BODY.set(Box::new(body));
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
