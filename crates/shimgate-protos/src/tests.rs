//! Wire checks for the generated code: golden bytes from protocols.md (§2.4, §2.6, §4.3, §7.6,
//! §7.7), round trips, names and field numbers that must match containerd.

use std::sync::Arc;

use protobuf::{Enum, EnumFull, Message, MessageFull};

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Length-delimited field: tag, one-byte length (all test values are < 128 bytes), data.
fn ld(field: u8, data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 128);
    let mut out = vec![(field << 3) | 2, data.len() as u8];
    out.extend_from_slice(data);
    out
}

/// Go's zero time, written by the Go shims for "not exited".
fn go_zero_time() -> Timestamp {
    Timestamp {
        seconds: -62_135_596_800,
        nanos: 0,
        ..Timestamp::default()
    }
}

#[test]
fn delete_response_golden_prefix() {
    let resp = task::DeleteResponse {
        pid: 14351,
        exit_status: 137,
        exited_at: protobuf::MessageField::some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
            ..Timestamp::default()
        }),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().unwrap();
    assert_eq!(
        &bytes[..6],
        &[0x08, 0x8f, 0x70, 0x10, 0x89, 0x01],
        "{}",
        hex(&bytes)
    );
    assert_eq!(bytes[6], 0x1a, "exited_at is field 3, length-delimited");
    assert_eq!(
        task::DeleteResponse::parse_from_bytes(&bytes).unwrap(),
        resp
    );

    // The v1 API's DeleteResponse has the same layout.
    let v1 = shim_v1::DeleteResponse::parse_from_bytes(&bytes).unwrap();
    assert_eq!((v1.pid, v1.exit_status), (14351, 137));
}

#[test]
fn start_stdin_plain_options_any() {
    // §7.7: `0a 1a "containerd.runc.v1.Options"`, 28 bytes, empty value.
    let stdin = ld(1, b"containerd.runc.v1.Options");
    assert_eq!(stdin.len(), 28);
    assert_eq!(&stdin[..2], &[0x0a, 0x1a]);
    let any = Any::parse_from_bytes(&stdin).unwrap();
    assert_eq!(any.type_url, "containerd.runc.v1.Options");
    assert!(any.value.is_empty());
    assert!(type_url_is(
        &any.type_url,
        runc_options::Options::descriptor().full_name()
    ));
    let opts = runc_options::Options::parse_from_bytes(&any.value).unwrap();
    assert_eq!(opts, runc_options::Options::default());
}

#[test]
fn start_stdin_options_with_binary_and_root() {
    // §2.6.1 / §7.7: `... 12 20 32 0e "/usr/sbin/runc" 3a 0e "/run/spec-runc"`, 62 bytes.
    let mut value = ld(6, b"/usr/sbin/runc");
    value.extend(ld(7, b"/run/spec-runc"));
    let mut stdin = ld(1, b"containerd.runc.v1.Options");
    stdin.extend(ld(2, &value));
    assert_eq!(stdin.len(), 62);
    assert_eq!(&stdin[28..32], &[0x12, 0x20, 0x32, 0x0e]);

    let opts = runc_options::Options {
        binary_name: "/usr/sbin/runc".into(),
        root: "/run/spec-runc".into(),
        ..Default::default()
    };
    assert_eq!(any_bare(&opts).unwrap().write_to_bytes().unwrap(), stdin);

    let any = Any::parse_from_bytes(&stdin).unwrap();
    assert_eq!(
        runc_options::Options::parse_from_bytes(&any.value).unwrap(),
        opts
    );
}

#[test]
fn create_request_with_runc_options_round_trips() {
    let opts = runc_options::Options {
        binary_name: "/usr/sbin/runc".into(),
        root: "/run/spec-runc".into(),
        ..Default::default()
    };
    let req = task::CreateTaskRequest {
        id: "spec-opts".into(),
        bundle: "/run/containerd/io.containerd.runtime.v2.task/default/spec-opts".into(),
        rootfs: vec![mount::Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "lowerdir=/a".into(),
                "upperdir=/b".into(),
                "workdir=/c".into(),
            ],
            ..Default::default()
        }],
        stdin: String::new(),
        stdout: "/run/containerd/fifo/1/spec-opts-stdout".into(),
        stderr: "/run/containerd/fifo/1/spec-opts-stderr".into(),
        options: protobuf::MessageField::some(any_bare(&opts).unwrap()),
        ..Default::default()
    };
    let bytes = req.write_to_bytes().unwrap();
    let back = task::CreateTaskRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back, req);
    let any = back.options.as_ref().unwrap();
    assert_eq!(any.type_url, "containerd.runc.v1.Options");
    assert_eq!(
        runc_options::Options::parse_from_bytes(&any.value).unwrap(),
        opts
    );
    // Field 10 = options: tag 0x52.
    assert!(bytes
        .windows(2)
        .any(|w| w == [0x52, any.compute_size() as u8]));
}

#[test]
fn pids_response_golden() {
    // §7.6: {1 {1 14351}, 1 {1 15715, 2 Any{"containerd.runc.v1.ProcessDetails", {1 "e1"}}}}
    let details = runc_options::ProcessDetails {
        exec_id: "e1".into(),
        ..Default::default()
    };
    assert_eq!(details.write_to_bytes().unwrap(), [0x0a, 0x02, b'e', b'1']);
    let resp = task::PidsResponse {
        processes: vec![
            task_types::ProcessInfo {
                pid: 14351,
                ..Default::default()
            },
            task_types::ProcessInfo {
                pid: 15715,
                info: protobuf::MessageField::some(any_bare(&details).unwrap()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().unwrap();

    let mut first = vec![0x08, 0x8f, 0x70];
    first = ld(1, &first);
    let mut any = ld(1, b"containerd.runc.v1.ProcessDetails");
    any.extend(ld(2, &[0x0a, 0x02, b'e', b'1']));
    let mut second = vec![0x08, 0xe3, 0x7a]; // 15715
    second.extend(ld(2, &any));
    let mut expected = first;
    expected.extend(ld(1, &second));
    assert_eq!(hex(&bytes), hex(&expected));

    let back = task::PidsResponse::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back, resp);
    let info = back.processes[1].info.as_ref().unwrap();
    assert!(type_url_is(
        &info.type_url,
        runc_options::ProcessDetails::descriptor().full_name()
    ));
    assert_eq!(
        runc_options::ProcessDetails::parse_from_bytes(&info.value)
            .unwrap()
            .exec_id,
        "e1"
    );

    // v1 ListPids uses the same ProcessInfo (shared import, not a copy).
    let v1 = shim_v1::ListPidsResponse {
        processes: resp.processes.clone(),
        ..Default::default()
    };
    assert_eq!(v1.write_to_bytes().unwrap(), bytes);
}

#[test]
fn exec_state_response_golden() {
    // §7.6: {1 "e1", 2 bundle, 4 status=1, 5/6/7 FIFOs, 10 {1 -62135596800}}, pid absent.
    let resp = task::StateResponse {
        id: "e1".into(),
        bundle: "/b".into(),
        status: task_types::Status::CREATED.into(),
        stdin: "/i".into(),
        stdout: "/o".into(),
        stderr: "/e".into(),
        exited_at: protobuf::MessageField::some(go_zero_time()),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().unwrap();
    let mut expected = ld(1, b"e1");
    expected.extend(ld(2, b"/b"));
    expected.extend([0x20, 0x01]);
    expected.extend(ld(5, b"/i"));
    expected.extend(ld(6, b"/o"));
    expected.extend(ld(7, b"/e"));
    // -62135596800 as a sign-extended 10-byte varint.
    let ts = [
        0x08, 0x80, 0x92, 0xb8, 0xc3, 0x98, 0xfe, 0xff, 0xff, 0xff, 0x01,
    ];
    expected.extend(ld(10, &ts));
    assert_eq!(hex(&bytes), hex(&expected));
    let back = task::StateResponse::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back.status.enum_value(), Ok(task_types::Status::CREATED));
    assert_eq!(back.exited_at.seconds, -62_135_596_800);
}

#[test]
fn status_enum_values() {
    use task_types::Status;
    let all = [
        (Status::UNKNOWN, 0),
        (Status::CREATED, 1),
        (Status::RUNNING, 2),
        (Status::STOPPED, 3),
        (Status::PAUSED, 4),
        (Status::PAUSING, 5),
    ];
    for (status, value) in all {
        assert_eq!(status.value(), value);
    }
    assert_eq!(
        Status::enum_descriptor().full_name(),
        "containerd.v1.types.Status"
    );
}

#[test]
fn connect_response_golden() {
    // §7.6: {1 shim_pid 14331, 2 task_pid 14351}, no version.
    let resp = task::ConnectResponse {
        shim_pid: 14331,
        task_pid: 14351,
        ..Default::default()
    };
    assert_eq!(
        resp.write_to_bytes().unwrap(),
        [0x08, 0xfb, 0x6f, 0x10, 0x8f, 0x70]
    );
}

#[test]
fn kill_all_request_golden() {
    // §7.6: Kill -a: {1 id, 3 9, 4 true}.
    let mut bytes = ld(1, b"spec-g2");
    bytes.extend([0x18, 0x09, 0x20, 0x01]);
    let req = task::KillRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!(req.id, "spec-g2");
    assert_eq!(req.signal, 9);
    assert!(req.all);
    assert!(req.exec_id.is_empty());
}

#[test]
fn v1_create_request_golden() {
    // §7.6: v1 Create request {1 id, 2 bundle, 3 "runc", 6/7/8 FIFOs}.
    let mut bytes = ld(1, b"spec-lv1");
    bytes.extend(ld(2, b"/bundle"));
    bytes.extend(ld(3, b"runc"));
    bytes.extend(ld(6, b"/in"));
    bytes.extend(ld(7, b"/out"));
    bytes.extend(ld(8, b"/err"));
    let req = shim_v1::CreateTaskRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!(req.id, "spec-lv1");
    assert_eq!(req.runtime, "runc");
    assert_eq!(
        (req.stdin.as_str(), req.stdout.as_str(), req.stderr.as_str()),
        ("/in", "/out", "/err")
    );
    assert_eq!(req.write_to_bytes().unwrap(), bytes);

    let start = shim_v1::StartResponse {
        id: "spec-lv1".into(),
        pid: 14437,
        ..Default::default()
    };
    let back = shim_v1::StartResponse::parse_from_bytes(&start.write_to_bytes().unwrap()).unwrap();
    assert_eq!(back, start);
}

#[test]
fn forward_request_envelope_round_trips() {
    // §7.6: Forward payload{1 Envelope{1 ts, 2 "default", 3 "/tasks/exec-added",
    //        4 Any{"containerd.events.TaskExecAdded", {1 "spec-v2a", 2 "e1"}}}}
    let event = events::TaskExecAdded {
        container_id: "spec-v2a".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let req = ttrpc_events::ForwardRequest {
        envelope: protobuf::MessageField::some(ttrpc_events::Envelope {
            timestamp: protobuf::MessageField::some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123,
                ..Timestamp::default()
            }),
            namespace: "default".into(),
            topic: "/tasks/exec-added".into(),
            event: protobuf::MessageField::some(any_bare(&event).unwrap()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = req.write_to_bytes().unwrap();
    assert_eq!(bytes[0], 0x0a, "envelope is field 1");
    let back = ttrpc_events::ForwardRequest::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back, req);
    let env = back.envelope.as_ref().unwrap();
    assert_eq!(env.event.type_url, "containerd.events.TaskExecAdded");
    let mut value = ld(1, b"spec-v2a");
    value.extend(ld(2, b"e1"));
    assert_eq!(env.event.value, value);
    assert_eq!(
        events::TaskExecAdded::parse_from_bytes(&env.event.value).unwrap(),
        event
    );
}

#[test]
fn v1_publish_stdin_is_bare_any() {
    // §4.3: stdin of `containerd publish` = `0a 1a "containerd.events.TaskExit" 12 ...`.
    let exit = events::TaskExit {
        container_id: "spec-lv1".into(),
        id: "spec-lv1".into(),
        pid: 14437,
        exit_status: 137,
        exited_at: protobuf::MessageField::some(go_zero_time()),
        ..Default::default()
    };
    let any = any_bare(&exit).unwrap();
    assert_eq!(any.type_url, "containerd.events.TaskExit");
    let bytes = any.write_to_bytes().unwrap();
    assert_eq!(&bytes[..2], &[0x0a, 0x1a]);
    assert_eq!(&bytes[2..28], b"containerd.events.TaskExit");
    assert_eq!(bytes[28], 0x12);
    assert_eq!(
        events::TaskExit::parse_from_bytes(&any.value).unwrap(),
        exit
    );
}

#[test]
fn unknown_fields_survive_round_trip() {
    // A newer containerd may add fields; decoding and re-encoding must not drop them.
    let mut bytes = ld(6, b"runc");
    bytes.extend(ld(15, b"future"));
    let opts = runc_options::Options::parse_from_bytes(&bytes).unwrap();
    assert_eq!(opts.binary_name, "runc");
    assert_eq!(opts.write_to_bytes().unwrap(), bytes);
}

#[test]
fn type_url_matching() {
    let name = "containerd.runc.v1.Options";
    assert!(type_url_is("containerd.runc.v1.Options", name));
    assert!(type_url_is(
        "type.googleapis.com/containerd.runc.v1.Options",
        name
    ));
    assert!(type_url_is(
        "example.com/x/containerd.runc.v1.Options",
        name
    ));
    assert!(!type_url_is("xcontainerd.runc.v1.Options", name));
    assert!(!type_url_is("containerd.runc.v1.OptionsX", name));
    assert!(!type_url_is(
        "type.googleapis.com/other.containerd.runc.v1.Options",
        name
    ));
    assert!(!type_url_is("", name));
    assert!(!type_url_is("containerd.runc.v1.Options", ""));
}

#[test]
fn any_bare_has_no_prefix() {
    let any = any_bare(&events::TaskOOM {
        container_id: "c".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(any.type_url, "containerd.events.TaskOOM");
    let any = any_bare(&cgroups_v1::Metrics::default()).unwrap();
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    assert!(any.value.is_empty());
}

#[test]
fn named_types_match_their_descriptors() {
    let named = crate::named_types();
    assert!(named.len() >= 18, "{named:?}");
    for (constant, descriptor) in named {
        assert_eq!(constant, descriptor);
    }
}

#[test]
fn bootstrap_params_round_trip_and_optional_presence() {
    let opts = runc_options::Options {
        binary_name: "runc".into(),
        ..Default::default()
    };
    let params = bootstrap::BootstrapParams {
        instance_id: "c1".into(),
        namespace: "k8s.io".into(),
        log_level: bootstrap::LogLevel::LOG_LEVEL_DEBUG.into(),
        containerd_version: "v2.3.0".into(),
        containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
        containerd_grpc_address: "/run/containerd/containerd.sock".into(),
        containerd_binary: "/usr/bin/containerd".into(),
        extensions: vec![bootstrap::Extension {
            value: protobuf::MessageField::some(any_bare(&opts).unwrap()),
            ..Default::default()
        }],
        socket_dir: Some("/run/containerd/s".into()),
        ..Default::default()
    };
    let bytes = params.write_to_bytes().unwrap();
    let back = bootstrap::BootstrapParams::parse_from_bytes(&bytes).unwrap();
    assert_eq!(back, params);
    assert_eq!(
        back.log_level.enum_value(),
        Ok(bootstrap::LogLevel::LOG_LEVEL_DEBUG)
    );
    // A negative enum goes out as a sign-extended 10-byte varint, like Go's encoder.
    let debug = [
        0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert!(
        bytes.windows(debug.len()).any(|w| w == debug),
        "{}",
        hex(&bytes)
    );
    let ext = &back.extensions[0].value;
    assert!(type_url_is(&ext.type_url, "containerd.runc.v1.Options"));

    // Presence: Some("") is written (tag 0x4a, length 0), None is not written at all.
    let empty_dir = bootstrap::BootstrapParams {
        socket_dir: Some(String::new()),
        ..Default::default()
    };
    let empty_bytes = empty_dir.write_to_bytes().unwrap();
    assert_eq!(empty_bytes, [0x4a, 0x00]);
    assert_eq!(
        bootstrap::BootstrapParams::parse_from_bytes(&empty_bytes)
            .unwrap()
            .socket_dir,
        Some(String::new())
    );
    let absent = bootstrap::BootstrapParams::default();
    assert!(absent.write_to_bytes().unwrap().is_empty());
    assert_eq!(
        bootstrap::BootstrapParams::parse_from_bytes(&[])
            .unwrap()
            .socket_dir,
        None
    );

    // Unknown (open enum) log levels survive a round trip.
    let odd = [0x18, 0x02];
    let parsed = bootstrap::BootstrapParams::parse_from_bytes(&odd).unwrap();
    assert_eq!(parsed.log_level.value(), 2);
    assert_eq!(parsed.write_to_bytes().unwrap(), odd);
}

#[test]
fn bootstrap_result_round_trip() {
    let mut result = bootstrap::BootstrapResult {
        version: 3,
        address: "unix:///run/containerd/s/abc".into(),
        protocol: "ttrpc".into(),
        ..Default::default()
    };
    result.metadata.insert("k".into(), "v".into());
    let bytes = result.write_to_bytes().unwrap();
    assert_eq!(&bytes[..2], &[0x08, 0x03]);
    assert_eq!(
        bootstrap::BootstrapResult::parse_from_bytes(&bytes).unwrap(),
        result
    );
}

#[test]
fn runtime_info_round_trip() {
    let info = introspection::RuntimeInfo {
        name: "io.containerd.runc.v2".into(),
        version: protobuf::MessageField::some(introspection::RuntimeVersion {
            version: "0.1.0".into(),
            revision: "abc".into(),
            ..Default::default()
        }),
        options: protobuf::MessageField::some(any_bare(&runc_options::Options::default()).unwrap()),
        features: protobuf::MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into(),
            value: b"{}".to_vec(),
            ..Any::default()
        }),
        ..Default::default()
    };
    let bytes = info.write_to_bytes().unwrap();
    assert_eq!(
        introspection::RuntimeInfo::parse_from_bytes(&bytes).unwrap(),
        info
    );
    assert_eq!(
        introspection::RuntimeInfo::descriptor().full_name(),
        "containerd.types.RuntimeInfo"
    );
}

#[test]
fn full_message_names() {
    let names = [
        (mount::Mount::descriptor(), "containerd.types.Mount"),
        (
            task_types::ProcessInfo::descriptor(),
            "containerd.v1.types.ProcessInfo",
        ),
        (
            task::CreateTaskRequest::descriptor(),
            "containerd.task.v2.CreateTaskRequest",
        ),
        (
            events::TaskCreate::descriptor(),
            "containerd.events.TaskCreate",
        ),
        (
            events::TaskStart::descriptor(),
            "containerd.events.TaskStart",
        ),
        (
            events::TaskDelete::descriptor(),
            "containerd.events.TaskDelete",
        ),
        (events::TaskIO::descriptor(), "containerd.events.TaskIO"),
        (events::TaskExit::descriptor(), "containerd.events.TaskExit"),
        (events::TaskOOM::descriptor(), "containerd.events.TaskOOM"),
        (
            events::TaskExecAdded::descriptor(),
            "containerd.events.TaskExecAdded",
        ),
        (
            events::TaskExecStarted::descriptor(),
            "containerd.events.TaskExecStarted",
        ),
        (
            events::TaskPaused::descriptor(),
            "containerd.events.TaskPaused",
        ),
        (
            events::TaskResumed::descriptor(),
            "containerd.events.TaskResumed",
        ),
        (
            events::TaskCheckpointed::descriptor(),
            "containerd.events.TaskCheckpointed",
        ),
        (
            ttrpc_events::Envelope::descriptor(),
            "containerd.services.events.ttrpc.v1.Envelope",
        ),
        (
            runc_options::Options::descriptor(),
            "containerd.runc.v1.Options",
        ),
        (
            runc_options::CheckpointOptions::descriptor(),
            "containerd.runc.v1.CheckpointOptions",
        ),
        (
            runc_options::ProcessDetails::descriptor(),
            "containerd.runc.v1.ProcessDetails",
        ),
        (
            cgroups_v1::Metrics::descriptor(),
            "io.containerd.cgroups.v1.Metrics",
        ),
        (
            cgroups_v2::Metrics::descriptor(),
            "io.containerd.cgroups.v2.Metrics",
        ),
        (
            shim_v1::ShimInfoResponse::descriptor(),
            "containerd.runtime.linux.shim.v1.ShimInfoResponse",
        ),
        (
            runc_linux::RuncOptions::descriptor(),
            "containerd.linux.runc.RuncOptions",
        ),
        (
            runc_linux::CreateOptions::descriptor(),
            "containerd.linux.runc.CreateOptions",
        ),
        (
            runc_linux::CheckpointOptions::descriptor(),
            "containerd.linux.runc.CheckpointOptions",
        ),
        (
            runc_linux::ProcessDetails::descriptor(),
            "containerd.linux.runc.ProcessDetails",
        ),
        (
            bootstrap::BootstrapParams::descriptor(),
            "containerd.runtime.bootstrap.v1.BootstrapParams",
        ),
        (
            bootstrap::BootstrapResult::descriptor(),
            "containerd.runtime.bootstrap.v1.BootstrapResult",
        ),
    ];
    for (descriptor, expected) in names {
        assert_eq!(descriptor.full_name(), expected);
    }
}

/// (field name, number) pairs of a message, in declaration order.
fn fields(descriptor: protobuf::reflect::MessageDescriptor) -> Vec<(String, i32)> {
    descriptor
        .fields()
        .map(|f| (f.name().to_owned(), f.number()))
        .collect()
}

#[test]
fn option_field_numbers() {
    let opts = fields(runc_options::Options::descriptor());
    assert_eq!(opts.len(), 13);
    assert!(opts
        .iter()
        .enumerate()
        .all(|(i, (_, n))| *n == i as i32 + 1));
    assert_eq!(opts[7], ("criu_path".to_owned(), 8));
    assert_eq!(opts[12], ("task_api_version".to_owned(), 13));
    let ckpt = fields(runc_options::CheckpointOptions::descriptor());
    assert_eq!(ckpt.last().unwrap(), &("parent_path".to_owned(), 10));
    assert_eq!(ckpt[7], ("image_path".to_owned(), 8));

    let v1_ckpt = fields(runc_linux::CheckpointOptions::descriptor());
    assert_eq!(v1_ckpt[7], ("work_path".to_owned(), 8));
    assert_eq!(v1_ckpt[8], ("image_path".to_owned(), 9));
    let create = fields(runc_linux::CreateOptions::descriptor());
    assert_eq!(create.len(), 13);
    assert_eq!(create[12], ("criu_image_path".to_owned(), 13));

    let v2 = fields(cgroups_v2::Metrics::descriptor());
    let numbers: Vec<i32> = v2.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, [1, 2, 4, 5, 6, 7, 8, 9]);
    let v1 = fields(cgroups_v1::Metrics::descriptor());
    assert_eq!(v1.len(), 9);
}

struct NoTask;
impl task_ttrpc::Task for NoTask {}
struct NoShim;
impl shim_v1_ttrpc::Shim for NoShim {}
struct NoEvents;
impl ttrpc_events_ttrpc::Events for NoEvents {}

fn method_names(service: &ttrpc::r#async::Service) -> Vec<String> {
    let mut names: Vec<String> = service.methods.keys().cloned().collect();
    names.sort();
    names
}

#[test]
fn service_and_method_names() {
    let tasks = task_ttrpc::create_task(Arc::new(NoTask));
    assert_eq!(tasks.keys().collect::<Vec<_>>(), [TASK_V2_SERVICE]);
    assert_eq!(TASK_V2_SERVICE, "containerd.task.v2.Task");
    let mut expected = vec![
        "State",
        "Create",
        "Start",
        "Delete",
        "Pids",
        "Pause",
        "Resume",
        "Checkpoint",
        "Kill",
        "Exec",
        "ResizePty",
        "CloseIO",
        "Update",
        "Wait",
        "Stats",
        "Connect",
        "Shutdown",
    ];
    expected.sort_unstable();
    assert_eq!(method_names(&tasks[TASK_V2_SERVICE]), expected);

    let shims = shim_v1_ttrpc::create_shim(Arc::new(NoShim));
    assert_eq!(shims.keys().collect::<Vec<_>>(), [SHIM_V1_SERVICE]);
    assert_eq!(SHIM_V1_SERVICE, "containerd.runtime.linux.shim.v1.Shim");
    let mut expected = vec![
        "State",
        "Create",
        "Start",
        "Delete",
        "DeleteProcess",
        "ListPids",
        "Pause",
        "Resume",
        "Checkpoint",
        "Kill",
        "Exec",
        "ResizePty",
        "CloseIO",
        "ShimInfo",
        "Update",
        "Wait",
    ];
    expected.sort_unstable();
    assert_eq!(method_names(&shims[SHIM_V1_SERVICE]), expected);

    let events = ttrpc_events_ttrpc::create_events(Arc::new(NoEvents));
    assert_eq!(events.keys().collect::<Vec<_>>(), [EVENTS_SERVICE]);
    assert_eq!(EVENTS_SERVICE, "containerd.services.events.ttrpc.v1.Events");
    assert_eq!(method_names(&events[EVENTS_SERVICE]), ["Forward"]);
}

#[test]
fn task_v3_alias_serves_same_methods() {
    let services = create_task_v2_and_v3(Arc::new(NoTask));
    let mut keys: Vec<&String> = services.keys().collect();
    keys.sort();
    assert_eq!(keys, [TASK_V2_SERVICE, TASK_V3_SERVICE]);
    assert_eq!(
        method_names(&services[TASK_V2_SERVICE]),
        method_names(&services[TASK_V3_SERVICE])
    );
}
