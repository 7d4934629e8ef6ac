use super::*;

fn load_str(file: &str, overrides: &[&str]) -> Result<NodeConfig, ConfigError> {
    let mut table = parse_file(Path::new("pageserver.toml"), file)?;
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    apply_overrides(&mut table, &overrides)?;
    from_table(table)
}

#[test]
fn empty_config_is_the_defaults() {
    assert_eq!(load_str("", &[]).unwrap(), NodeConfig::default());
}

#[test]
fn overrides_win_over_the_file() {
    let config = load_str(
        "listen_http_addr = '127.0.0.1:1'\n[tenant_config]\ncheckpoint_distance = 1000\n",
        &[
            "listen_http_addr='127.0.0.1:2'",
            "checkpoint_distance=268435456",
        ],
    )
    .unwrap();
    assert_eq!(config.listen_http_addr, "127.0.0.1:2");
    assert_eq!(config.tenant_config.checkpoint_distance, 268435456);
}

#[test]
fn tenant_keys_are_accepted_at_the_top_level() {
    let config = load_str(
        "gc_period = '5 m'",
        &["tenant_config.compaction_threshold=4"],
    )
    .unwrap();
    assert_eq!(
        config.tenant_config.gc_period,
        HumanDuration::from_secs(300)
    );
    assert_eq!(config.tenant_config.compaction_threshold, 4);
}

#[test]
fn a_key_twice_in_one_source_is_refused() {
    let err = load_str(
        "gc_period = '5 m'\n[tenant_config]\ngc_period = '6 m'\n",
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::Duplicate { ref key } if key == "gc_period"),
        "{err}"
    );
}

#[test]
fn remote_storage_kinds() {
    let config = load_str("", &["remote_storage={local_path='/x'}"]).unwrap();
    assert_eq!(
        config.remote_storage,
        Some(RemoteStorageConfig {
            storage: RemoteStorageKind::LocalFs(LocalFsConfig {
                local_path: "/x".into()
            }),
            timeout: HumanDuration::from_secs(120),
            small_timeout: HumanDuration::from_secs(30),
        })
    );
    let config = load_str(
        "[remote_storage]\nbucket_name='b'\nbucket_region='r'\nendpoint='http://127.0.0.1:5000'\ntimeout='5 s'\n",
        &[],
    )
    .unwrap();
    let rs = config.remote_storage.unwrap();
    assert!(matches!(rs.storage, RemoteStorageKind::AwsS3(ref c) if c.concurrency_limit == 100));
    assert_eq!(rs.timeout, HumanDuration::from_secs(5));
    let err = load_str("", &["remote_storage={path='/x'}"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("remote_storage") && err.contains("local_path"),
        "{err}"
    );
    let err = load_str("", &["remote_storage={local_path='/x', bogus=1}"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bogus"), "{err}");
    let err = load_str(
        "",
        &["remote_storage={local_path='/x', small_timeout='soon'}"],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("small_timeout"), "{err}");
    let err = load_str("", &["remote_storage={local_path='/x', timeout='0s'}"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("remote_storage.timeout"), "{err}");
}

/// The forms of Neon's services overview ("Backup service"), as a `-c` override and as a TOML table.
#[test]
fn remote_storage_forms_of_the_services_overview() {
    let s3 = load_str(
        "",
        &["remote_storage={bucket_name='some-sample-bucket',bucket_region='eu-north-1', prefix_in_bucket='/test_prefix/'}"],
    )
    .unwrap();
    assert!(matches!(
        s3.remote_storage.unwrap().storage,
        RemoteStorageKind::AwsS3(ref c) if c.bucket_name == "some-sample-bucket"
            && c.prefix_in_bucket.as_deref() == Some("/test_prefix/")
    ));
    let local = load_str(
        "[remote_storage]\nlocal_path = '/Users/someonetoignore/Downloads/tmp_dir/'\n",
        &[],
    )
    .unwrap();
    assert!(matches!(
        local.remote_storage.unwrap().storage,
        RemoteStorageKind::LocalFs(_)
    ));
    let azure = load_str(
        "[remote_storage]\ncontainer_name = 'some-container-name'\nstorage_account = 'somestorageaccnt'\ncontainer_region = 'us-east'\nprefix_in_container = '/test-prefix/'\n",
        &[],
    )
    .unwrap();
    assert!(matches!(
        azure.remote_storage.unwrap().storage,
        RemoteStorageKind::AzureContainer(ref c) if c.storage_account.as_deref() == Some("somestorageaccnt")
    ));
}

#[test]
fn unknown_keys_are_named_exactly() {
    for (arg, key) in [
        ("bogus_key=1", "bogus_key"),
        ("tenant_config.nope=1", "tenant_config.nope"),
    ] {
        match load_str("", &[arg]) {
            Err(ConfigError::UnknownKey { key: got }) => assert_eq!(got, key),
            other => panic!("{arg}: {other:?}"),
        }
    }
}

#[test]
fn errors_name_the_key_on_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["bogus_key=1"], "bogus_key"),
        (
            &["tenant_config.bogus_tenant_key=1"],
            "tenant_config.bogus_tenant_key",
        ),
        (
            &["checkpoint_distance='x'"],
            "tenant_config.checkpoint_distance",
        ),
        (&["gc_period='soon'"], "tenant_config.gc_period"),
        (&["listen_http_addr=9898"], "listen_http_addr"),
        (&["listen_http_addr='nowhere'"], "listen_http_addr"),
        (&["log_format='xml'"], "log_format"),
        (&["wait_lsn_timeout='0 s'"], "wait_lsn_timeout"),
        (&["walredo_pool_size=0"], "tenant_config.walredo_pool_size"),
        (
            &["remote_storage={local_path='relative'}"],
            "remote_storage.local_path",
        ),
    ];
    for (overrides, key) in cases {
        let err = load_str("", overrides).unwrap_err().to_string();
        assert!(err.contains(key), "{overrides:?}: {err}");
        assert!(!err.contains('\n'), "{overrides:?}: {err}");
    }
}

#[test]
fn malformed_override_is_refused() {
    for arg in ["no_equals_sign", "", "a = [", "x='unterminated"] {
        let err = load_str("", &[arg]).unwrap_err();
        assert!(
            matches!(err, ConfigError::Override { .. }),
            "{arg:?}: {err}"
        );
    }
}

#[test]
fn written_config_reads_back_equal() {
    let dir = std::env::temp_dir().join(format!("pageserver-config-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let overrides = vec![
        "id=7".to_string(),
        "remote_storage={local_path='/x'}".to_string(),
    ];
    let written = init(&dir, &overrides).unwrap();
    assert_eq!(written.id, 7);
    assert_eq!(load(&dir, &[]).unwrap(), written);
    assert!(matches!(
        init(&dir, &[]),
        Err(ConfigError::AlreadyExists { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}

/// pageserver.toml.example documents every key with its default value.
#[test]
fn example_file_lists_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pageserver.toml.example");
    let text = fs::read_to_string(&path).unwrap();
    let config = from_table(parse_file(&path, &text).unwrap()).unwrap();
    assert_eq!(config, NodeConfig::default());

    // Every key of the defaults is written out (remote_storage, absent by default, is shown commented).
    let defaults = toml::Value::try_from(NodeConfig::default()).unwrap();
    let written: toml::Table = text.parse().unwrap();
    for (key, value) in defaults.as_table().unwrap() {
        match value {
            toml::Value::Table(t) => {
                for sub in t.keys() {
                    assert!(
                        written[key].as_table().unwrap().contains_key(sub),
                        "{key}.{sub} missing"
                    );
                }
            }
            _ => assert!(written.contains_key(key), "{key} missing"),
        }
    }
    for kind in ["local_path", "bucket_name", "container_name"] {
        assert!(
            text.contains(&format!("{kind} =")),
            "remote_storage kind {kind} not shown"
        );
    }
}
