/*-------------------------------------------------------------------------
 *
 * walredo.c
 *	  "postgres --wal-redo": replay WAL records onto one page at a time.
 *
 * The pageserver keeps pages as a base image plus the WAL records that
 * modified them since.  To materialize a page it starts this process once
 * and then, for each page, sends it the base image and the records over
 * stdin and reads the resulting page back from stdout.  The process has no
 * data directory: shared memory is plain private memory, the storage
 * manager is the in-memory one of inmem_smgr.c, and only the requested page
 * is modified (redo_read_buffer_filter skips every other block a record
 * touches).
 *
 * Protocol (all integers big-endian), one message =
 *		u8 type | i32 length (counts itself and the payload) | payload
 *
 *	'S'  sandbox: a classic BPF program (struct sock_filter[], native
 *		 endianness); must be the first message.  We close every fd above
 *		 2 and install it as our seccomp filter.  No reply.
 *	'B'  begin redo for a block: BufferTag.  No reply.
 *	'P'  push page: BufferTag + BLCKSZ bytes (the base image).  No reply.
 *	'A'  apply record: u64 end LSN + the whole XLogRecord.  No reply.
 *	'G'  get page: BufferTag.  Reply: the BLCKSZ page bytes.
 *	'H'  ping: empty.  Reply: BLCKSZ zero bytes.
 *	'X'  (builds with -DWALREDO_TEST_HOOKS only) attempt a system call that
 *		 the sandbox must forbid; payload "open", "socket" or "execve".
 *
 * BufferTag = u8 forknum | u32 spcnode | u32 dbnode | u32 relnode | u32 blkno.
 * End of input means a clean exit (status 0).  Any error is reported on
 * stderr and ends the process with a non-zero status: the caller starts a
 * new one.  docs/walredo.md has the full story, including the system calls
 * the sandbox must allow.
 *
 * src/backend/walredo/walredo.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <locale.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "access/clog.h"
#include "access/commit_ts.h"
#include "access/heapam_xlog.h"
#include "access/multixact.h"
#include "access/nbtree.h"
#include "access/rmgr.h"
#include "access/subtrans.h"
#include "access/syncscan.h"
#include "access/twophase.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogprefetcher.h"
#include "access/xlogreader.h"
#include "access/xlogrecovery.h"
#include "access/xlogutils.h"
#include "catalog/pg_control.h"
#include "libpq/pqformat.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/autovacuum.h"
#include "postmaster/bgworker_internals.h"
#include "postmaster/bgwriter.h"
#include "postmaster/pgarch.h"
#include "replication/logicallauncher.h"
#include "replication/origin.h"
#include "replication/slot.h"
#include "replication/walreceiver.h"
#include "replication/walsender.h"
#include "storage/bufmgr.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/pg_sema.h"
#include "storage/pg_shmem.h"
#include "storage/pmsignal.h"
#include "storage/predicate.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/procsignal.h"
#include "storage/shmem.h"
#include "storage/sinvaladt.h"
#if PG_VERSION_NUM >= 180000
#include "access/transam.h"
#include "postmaster/postmaster.h"
#include "postmaster/walsummarizer.h"
#include "replication/slotsync.h"
#include "storage/aio_subsys.h"
#include "storage/dsm_registry.h"
#include "utils/backend_status.h"
#include "utils/injection_point.h"
#include "utils/wait_event.h"
#endif
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "walredo/walredo.h"
#include "walredo_internal.h"

/* Buffer pool size: one record touches at most XLR_MAX_BLOCK_ID + 1 blocks */
#define WALREDO_SHARED_BUFFERS "128"

/* Largest sandbox program we accept (BPF_MAXINSNS) */
#define WALREDO_MAX_BPF_INSNS 4096

/* Payload sizes of the fixed-size messages */
#define BUFFER_TAG_LEN 17

static XLogReaderState *reader;

/* The page being reconstructed, set by 'B' */
static BufferTag target_tag;
static bool target_valid = false;

static const PGAlignedBlock zero_page;

static void walredo_startup(const char *argv0);
static void create_private_shmem(void);
static int	read_message(StringInfo msg);
static void enter_sandbox(StringInfo msg);
static void quick_exit_callback(int code, Datum arg);
static void read_buffer_tag(StringInfo msg, BufferTag *tag);
static void require_target(const BufferTag *tag, const char *what);
static void begin_redo_for_block(StringInfo msg);
static void push_page(StringInfo msg);
static void apply_record(StringInfo msg);
static void get_page(StringInfo msg);
static void check_rmgr_allowed(const XLogRecord *record);
static bool redo_block_filter(XLogReaderState *record, uint8 block_id);
static void apply_error_callback(void *arg);
static void drop_all_buffers(void);
static void write_stdout(const char *data, size_t len);

#ifdef WALREDO_TEST_HOOKS
static void run_test_hook(StringInfo msg);
#endif

/*
 * Entry point, called from main() for "postgres --wal-redo [ignored args]".
 */
void
WalRedoMain(int argc, char *argv[])
{
	sigjmp_buf	local_sigjmp_buf;
	StringInfoData msg;
	int			type;

	walredo_startup(argv[0]);

	/*
	 * The first message must be the sandbox program.  Everything that needs
	 * system calls beyond plain reads, writes and memory growth is done by
	 * now.
	 */
	initStringInfo(&msg);
	type = read_message(&msg);
	if (type == EOF)
		proc_exit(0);
	if (type != 'S')
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("sandbox program expected as the first message")));
	enter_sandbox(&msg);

	/*
	 * From here on any ERROR ends the process: report it and exit.  There is
	 * nothing to clean up, and the sandbox would not allow much of it.
	 */
	if (sigsetjmp(local_sigjmp_buf, 0) != 0)
	{
		HOLD_INTERRUPTS();
		error_context_stack = NULL;
		EmitErrorReport();
		_exit(1);
	}
	PG_exception_stack = &local_sigjmp_buf;

	MemoryContextSwitchTo(MessageContext);
	for (;;)
	{
		MemoryContextReset(MessageContext);
		initStringInfo(&msg);

		type = read_message(&msg);
		switch (type)
		{
			case 'B':
				begin_redo_for_block(&msg);
				break;
			case 'P':
				push_page(&msg);
				break;
			case 'A':
				apply_record(&msg);
				break;
			case 'G':
				get_page(&msg);
				break;
			case 'H':
				pq_getmsgend(&msg);
				write_stdout(zero_page.data, BLCKSZ);
				break;
#ifdef WALREDO_TEST_HOOKS
			case 'X':
				run_test_hook(&msg);
				break;
#endif
			case EOF:
				_exit(0);
			default:
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("invalid message type %d", type)));
		}
	}
}

/*
 * Bring up just enough of a backend to run redo routines: GUCs, private
 * "shared" memory, a PGPROC, buffer and storage managers, resource managers.
 */
static void
walredo_startup(const char *argv0)
{
	InitStandaloneProcess(argv0);

	/*
	 * Our messages must not depend on locale files the sandbox cannot open,
	 * and redo is purely physical, so run in the C locale.
	 */
	setlocale(LC_ALL, "C");

	InitializeGUCOptions();
	SetConfigOption("log_min_messages", "warning", PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("shared_buffers", WALREDO_SHARED_BUFFERS, PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("max_connections", "1", PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("max_worker_processes", "0", PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("max_wal_senders", "0", PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("max_prepared_transactions", "0", PGC_POSTMASTER, PGC_S_ARGV);
	SetConfigOption("autovacuum_max_workers", "1", PGC_POSTMASTER, PGC_S_ARGV);
#if PG_VERSION_NUM >= 180000
	SetConfigOption("autovacuum_worker_slots", "1", PGC_POSTMASTER, PGC_S_ARGV);

	/*
	 * No IO workers exist (and none could be started): reads complete in the
	 * storage manager itself (inmem_smgr.c), the rest of AIO runs in-process.
	 */
	SetConfigOption("io_method", "sync", PGC_POSTMASTER, PGC_S_ARGV);
#endif
	whereToSendOutput = DestNone;

	smgr_set_alternate(walredo_smgr_switch);

	InitializeMaxBackends();
#if PG_VERSION_NUM >= 180000
	InitPostmasterChildSlots();
	InitializeFastPathLocks();
#endif
	process_shmem_requests();
	InitializeShmemGUCs();
	create_private_shmem();

	PgStartTime = GetCurrentTimestamp();
	InitProcess();
	BaseInit();
	SetProcessingMode(NormalProcessing);

	/* Redo routines expect to run in the startup process during recovery */
	InRecovery = true;

	MessageContext = AllocSetContextCreate(TopMemoryContext,
										   "MessageContext",
										   ALLOCSET_DEFAULT_SIZES);
	CurrentResourceOwner = ResourceOwnerCreate(NULL, "wal redo");

	RmgrStartup();

	reader = XLogReaderAllocate(wal_segment_size, NULL,
								XL_ROUTINE(.page_read = NULL), NULL);
	if (reader == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Failed while allocating a WAL reading processor.")));

	/*
	 * Exit without running the usual cleanup: there are no files, no real
	 * shared memory and no other processes.  Registered last, so it runs
	 * first.
	 */
	before_shmem_exit(quick_exit_callback, 0);

	/* Signals keep their default actions (terminate); unblock them */
	sigprocmask(SIG_SETMASK, &UnBlockSig, NULL);
}

static void
quick_exit_callback(int code, Datum arg)
{
	_exit(code);
}

/*
 * Set up "shared" memory in malloc'd memory, the way
 * CreateSharedMemoryAndSemaphores() does for a real postmaster, minus the
 * pieces that touch the data directory (async notify SLRU cleanup) or create
 * operating system objects (dynamic shared memory control segment).  The
 * *ShmemInit calls follow the version's ipci.c, in its order.
 */
static void
create_private_shmem(void)
{
	PGShmemHeader *hdr;
	Size		size;
	int			numSemas;

	size = CalculateShmemSize(&numSemas);
	hdr = (PGShmemHeader *) calloc(1, size);
	if (hdr == NULL)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not allocate %zu bytes of private shared memory", size)));
	hdr->magic = PGShmemMagic;
	hdr->creatorPID = getpid();
	hdr->totalsize = size;
	hdr->freeoffset = MAXALIGN(sizeof(PGShmemHeader));
	InitShmemAccess(hdr);

	/* Only stat()s the directory, to seed semaphore keys; any will do */
	DataDir = "/";
	PGReserveSemaphores(numSemas);
	DataDir = NULL;

	InitShmemAllocation();
	CreateLWLocks();
	InitShmemIndex();
	dsm_shmem_init();
#if PG_VERSION_NUM >= 180000
	DSMRegistryShmemInit();
	VarsupShmemInit();
#endif

	XLOGShmemInit();
	XLogPrefetchShmemInit();
	XLogRecoveryShmemInit();
	CLOGShmemInit();
	CommitTsShmemInit();
	SUBTRANSShmemInit();
	MultiXactShmemInit();
#if PG_VERSION_NUM >= 180000
	BufferManagerShmemInit();

	LockManagerShmemInit();
	PredicateLockShmemInit();

	InitProcGlobal();
	ProcArrayShmemInit();
	BackendStatusShmemInit();
#else
	InitBufferPool();

	InitLocks();
	InitPredicateLocks();

	InitProcGlobal();
	CreateSharedProcArray();
	CreateSharedBackendStatus();
#endif
	TwoPhaseShmemInit();
	BackgroundWorkerShmemInit();
#if PG_VERSION_NUM >= 180000
	SharedInvalShmemInit();
#else
	CreateSharedInvalidationState();
#endif

	PMSignalShmemInit();
	ProcSignalShmemInit();
	CheckpointerShmemInit();
	AutoVacuumShmemInit();
	ReplicationSlotsShmemInit();
	ReplicationOriginShmemInit();
	WalSndShmemInit();
	WalRcvShmemInit();
#if PG_VERSION_NUM >= 180000
	WalSummarizerShmemInit();
#endif
	PgArchShmemInit();
	ApplyLauncherShmemInit();
#if PG_VERSION_NUM >= 180000
	SlotSyncShmemInit();
#else
	SnapMgrInit();
#endif

	BTreeShmemInit();
	SyncScanShmemInit();
	StatsShmemInit();
#if PG_VERSION_NUM >= 180000
	WaitEventCustomShmemInit();
	InjectionPointShmemInit();
	AioShmemInit();
#endif
}

/*
 * Input is read with plain read(2) into our own buffer: stdio could fstat()
 * stdin, which the sandbox does not allow.
 */
static char stdin_buf[65536];
static size_t stdin_len = 0;
static size_t stdin_pos = 0;

/* Fill "dst" with exactly "count" bytes; returns fewer only at end of input */
static size_t
read_stdin(char *dst, size_t count)
{
	size_t		done = 0;

	while (done < count)
	{
		size_t		n;

		if (stdin_pos == stdin_len)
		{
			ssize_t		rc = read(STDIN_FILENO, stdin_buf, sizeof(stdin_buf));

			if (rc < 0)
			{
				if (errno == EINTR)
					continue;
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read from stdin: %m")));
			}
			if (rc == 0)
				break;
			stdin_len = (size_t) rc;
			stdin_pos = 0;
		}
		n = Min(count - done, stdin_len - stdin_pos);
		memcpy(dst + done, stdin_buf + stdin_pos, n);
		stdin_pos += n;
		done += n;
	}
	return done;
}

/*
 * Read one message into "msg" (payload only) and return its type, or EOF if
 * the input ended cleanly before a new message.
 */
static int
read_message(StringInfo msg)
{
	char		hdr[5];
	size_t		got;
	uint32		len;

	got = read_stdin(hdr, sizeof(hdr));
	if (got == 0)
		return EOF;
	if (got != sizeof(hdr))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected end of input in message header")));

	memcpy(&len, &hdr[1], sizeof(len));
	len = pg_ntoh32(len);
	if (len < 4 || len - 4 >= MaxAllocSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid message length %u", len)));
	len -= 4;

	resetStringInfo(msg);
	enlargeStringInfo(msg, (int) len);
	if (read_stdin(msg->data, len) != len)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected end of input in message body")));
	msg->len = (int) len;
	msg->data[len] = '\0';
	msg->cursor = 0;

	return (unsigned char) hdr[0];
}

/*
 * Install the caller's seccomp program.  Before that, drop every inherited
 * file descriptor except stdin, stdout and stderr, and make malloc() grow
 * with brk(2) only so that mmap(2) need not be allowed.
 */
static void
enter_sandbox(StringInfo msg)
{
	struct sock_fprog prog;
	struct sock_filter *insns;
	int			ninsns;

	if (msg->len == 0 || msg->len % sizeof(struct sock_filter) != 0)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("sandbox program length %d is not a positive multiple of %zu",
						msg->len, sizeof(struct sock_filter))));
	ninsns = msg->len / sizeof(struct sock_filter);
	if (ninsns > WALREDO_MAX_BPF_INSNS)
		ereport(FATAL,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("sandbox program has %d instructions, at most %d allowed",
						ninsns, WALREDO_MAX_BPF_INSNS)));

	insns = (struct sock_filter *) palloc(msg->len);
	memcpy(insns, msg->data, msg->len);
	prog.len = (unsigned short) ninsns;
	prog.filter = insns;

#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
#endif
	{
		long		maxfd = sysconf(_SC_OPEN_MAX);

		for (long fd = 3; fd < maxfd; fd++)
			(void) close((int) fd);
	}

	mallopt(M_MMAP_MAX, 0);

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		ereport(FATAL,
				(errmsg("could not set no_new_privs: %m")));
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		ereport(FATAL,
				(errmsg("could not install the sandbox program: %m")));

	pfree(insns);
}

static void
read_buffer_tag(StringInfo msg, BufferTag *tag)
{
	WrRelFile	rnode;
	int			forknum;
	BlockNumber blkno;

	if (msg->len - msg->cursor < BUFFER_TAG_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("message too short for a buffer tag")));
	forknum = pq_getmsgbyte(msg);
	WR_REL_SPC(rnode) = pq_getmsgint(msg, 4);
	WR_REL_DB(rnode) = pq_getmsgint(msg, 4);
	WR_REL_NUMBER(rnode) = pq_getmsgint(msg, 4);
	blkno = pq_getmsgint(msg, 4);

	if (forknum > MAX_FORKNUM)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid fork number %d", forknum)));
	if (blkno > MaxBlockNumber)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid block number %u", blkno)));

	WR_INIT_TAG(*tag, rnode, (ForkNumber) forknum, blkno);
}

static void
require_target(const BufferTag *tag, const char *what)
{
	if (!target_valid)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("%s before BeginRedoForBlock", what)));
	if (tag != NULL && !WR_TAGS_EQUAL(*tag, target_tag))
	{
		WrRelFile	rel = WR_TAG_REL(*tag);
		WrRelFile	target_rel = WR_TAG_REL(target_tag);

		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("%s for %u/%u/%u fork %d block %u, but the target is %u/%u/%u fork %d block %u",
						what,
						WR_REL_SPC(rel), WR_REL_DB(rel), WR_REL_NUMBER(rel),
						tag->forkNum, tag->blockNum,
						WR_REL_SPC(target_rel), WR_REL_DB(target_rel),
						WR_REL_NUMBER(target_rel), target_tag.forkNum,
						target_tag.blockNum)));
	}
}

/* 'B': forget the previous page and start on a new one */
static void
begin_redo_for_block(StringInfo msg)
{
	BufferTag	tag;

	read_buffer_tag(msg, &tag);
	pq_getmsgend(msg);

	drop_all_buffers();
	target_tag = tag;
	target_valid = true;
	walredo_smgr_reset(&target_tag);
}

/* 'P': load the base image of the target page */
static void
push_page(StringInfo msg)
{
	BufferTag	tag;
	const char *content;
	Buffer		buf;

	read_buffer_tag(msg, &tag);
	content = pq_getmsgbytes(msg, BLCKSZ);
	pq_getmsgend(msg);
	require_target(&tag, "PushPage");

	buf = ReadBufferWithoutRelcache(WR_TAG_REL(tag), tag.forkNum, tag.blockNum,
									RBM_ZERO_AND_LOCK, NULL, true);
	memcpy(BufferGetPage(buf), content, BLCKSZ);
	MarkBufferDirty(buf);
	UnlockReleaseBuffer(buf);
}

/* 'A': decode one WAL record and run its redo routine */
static void
apply_record(StringInfo msg)
{
	XLogRecPtr	end_lsn;
	uint32		rec_len;
	XLogRecord *record;
	DecodedXLogRecord *decoded;
	char	   *errormsg;
	ErrorContextCallback errcallback;

	require_target(NULL, "ApplyRecord");

	end_lsn = (XLogRecPtr) pq_getmsgint64(msg);
	if (XLogRecPtrIsInvalid(end_lsn))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("invalid end LSN 0/0 for a WAL record")));
	rec_len = (uint32) (msg->len - msg->cursor);
	if (rec_len < SizeOfXLogRecord)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("WAL record of %u bytes is shorter than a record header", rec_len)));

	/* Copy so that the record is MAXALIGNed for the decoder */
	record = (XLogRecord *) palloc(rec_len);
	memcpy(record, pq_getmsgbytes(msg, rec_len), rec_len);
	pq_getmsgend(msg);

	if (record->xl_tot_len != rec_len)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("WAL record length %u does not match the %u bytes received",
						record->xl_tot_len, rec_len)));
	check_rmgr_allowed(record);

	/*
	 * Only the end of the record is known; use it as the start too.  Redo
	 * routines stamp pages with EndRecPtr.
	 */
	reader->ReadRecPtr = end_lsn;
	reader->EndRecPtr = end_lsn;
	reader->NextRecPtr = end_lsn;

	decoded = (DecodedXLogRecord *) palloc(DecodeXLogRecordRequiredSpace(rec_len));
	decoded->oversized = true;
	if (!DecodeXLogRecord(reader, decoded, record, end_lsn, &errormsg))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decode WAL record ending at %X/%X: %s",
						LSN_FORMAT_ARGS(end_lsn), errormsg)));
	decoded->next_lsn = end_lsn;
	reader->record = decoded;

	errcallback.callback = apply_error_callback;
	errcallback.arg = (void *) reader;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	redo_read_buffer_filter = redo_block_filter;
	GetRmgr(record->xl_rmid).rm_redo(reader);
	redo_read_buffer_filter = NULL;

	error_context_stack = errcallback.previous;
	reader->record = NULL;
}

/*
 * Only records that change relation pages may be replayed here.  Others
 * (commits, checkpoints, file creation and removal, ...) are the caller's
 * business, and their redo routines would reach for files.
 */
static void
check_rmgr_allowed(const XLogRecord *record)
{
	uint8		info = record->xl_info & ~XLR_INFO_MASK;
	bool		ok;

	switch (record->xl_rmid)
	{
		case RM_HEAP_ID:
		case RM_BTREE_ID:
		case RM_HASH_ID:
		case RM_GIN_ID:
		case RM_GIST_ID:
		case RM_SEQ_ID:
		case RM_SPGIST_ID:
		case RM_BRIN_ID:
		case RM_GENERIC_ID:
			ok = true;
			break;
		case RM_HEAP2_ID:
			/* logical rewrite mappings are files, not pages */
			ok = (info & XLOG_HEAP_OPMASK) != XLOG_HEAP2_REWRITE;
			break;
		case RM_XLOG_ID:
			ok = (info == XLOG_FPI || info == XLOG_FPI_FOR_HINT);
			break;
		default:
			ok = false;
			break;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("WAL record of resource manager %u with info 0x%02X cannot be replayed in wal-redo mode",
						record->xl_rmid, record->xl_info)));
}

/* Skip every block of the record except the target page */
static bool
redo_block_filter(XLogReaderState *record, uint8 block_id)
{
	BufferTag	tag;
	WrRelFile	rel;
	ForkNumber	forknum;
	BlockNumber blkno;

	if (!XLogRecGetBlockTagExtended(record, block_id, &rel, &forknum, &blkno,
									NULL))
		return true;
	WR_INIT_TAG(tag, rel, forknum, blkno);
	return !WR_TAGS_EQUAL(tag, target_tag);
}

static void
apply_error_callback(void *arg)
{
	XLogReaderState *record = (XLogReaderState *) arg;
	StringInfoData buf;

	initStringInfo(&buf);
	xlog_outdesc(&buf, record);
	errcontext("WAL redo of record ending at %X/%X for %s",
			   LSN_FORMAT_ARGS(record->EndRecPtr), buf.data);
	pfree(buf.data);
}

/* 'G': send the target page back */
static void
get_page(StringInfo msg)
{
	BufferTag	tag;
	Buffer		buf;

	read_buffer_tag(msg, &tag);
	pq_getmsgend(msg);
	require_target(&tag, "GetPage");

	buf = ReadBufferWithoutRelcache(WR_TAG_REL(tag), tag.forkNum, tag.blockNum,
									RBM_NORMAL, NULL, true);
	write_stdout(BufferGetPage(buf), BLCKSZ);
	ReleaseBuffer(buf);
}

/*
 * Throw away every page in the buffer pool, so that nothing of the previous
 * request can leak into the next one.
 */
static void
drop_all_buffers(void)
{
	WrRelFile  *nodes = palloc(sizeof(WrRelFile) * NBuffers);
	SMgrRelation *rels = palloc(sizeof(SMgrRelation) * NBuffers);
	int			nnodes = 0;

	for (int i = 0; i < NBuffers; i++)
	{
		BufferDesc *hdr = GetBufferDescriptor(i);
		uint32		state = pg_atomic_read_u32(&hdr->state);
		WrRelFile	rel;
		bool		seen = false;

		if (!(state & BM_TAG_VALID))
			continue;
		rel = WR_TAG_REL(hdr->tag);
		for (int j = 0; j < nnodes && !seen; j++)
			seen = WR_REL_EQUAL(nodes[j], rel);
		if (!seen)
			nodes[nnodes++] = rel;
	}
	for (int j = 0; j < nnodes; j++)
		rels[j] = smgropen(nodes[j], WR_NO_BACKEND);
#if PG_VERSION_NUM >= 180000
	if (nnodes > 0)
		DropRelationsAllBuffers(rels, nnodes);
	smgrdestroyall();
#else
	if (nnodes > 0)
		DropRelFileNodesAllBuffers(rels, nnodes);
	smgrcloseall();
#endif

	pfree(rels);
	pfree(nodes);
}

static void
write_stdout(const char *data, size_t len)
{
	while (len > 0)
	{
		ssize_t		rc = write(STDOUT_FILENO, data, len);

		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write to stdout: %m")));
		}
		data += rc;
		len -= (size_t) rc;
	}
}

#ifdef WALREDO_TEST_HOOKS
/*
 * 'X': try a system call the sandbox must forbid.  Under the sandbox the
 * kernel kills us before the call returns; if it does return, say so.
 */
static void
run_test_hook(StringInfo msg)
{
	const char *what = msg->data;
	long		rc;

	if (msg->len == 0 || msg->data[msg->len - 1] != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("test hook name must be NUL-terminated")));

	if (strcmp(what, "open") == 0)
	{
		rc = open("/dev/null", O_RDONLY);
		if (rc >= 0)
			close((int) rc);
	}
	else if (strcmp(what, "socket") == 0)
	{
		rc = socket(AF_UNIX, SOCK_STREAM, 0);
		if (rc >= 0)
			close((int) rc);
	}
	else if (strcmp(what, "execve") == 0)
	{
		char	   *args[] = {"/nonexistent/walredo-test-hook", NULL};
		char	   *env[] = {NULL};

		rc = execve(args[0], args, env);
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unknown test hook \"%s\"", what)));

	ereport(WARNING,
			(errmsg("test hook \"%s\" was not stopped by the sandbox (result %ld)",
					what, rc)));
}
#endif							/* WALREDO_TEST_HOOKS */
