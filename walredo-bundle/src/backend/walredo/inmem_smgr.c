/*-------------------------------------------------------------------------
 *
 * inmem_smgr.c
 *	  Storage manager of the --wal-redo mode: no files at all.
 *
 * The redo process works on one target page at a time (see walredo.c).  That
 * page lives in the shared buffer pool; this storage manager only has to
 * cover the cases where the buffer manager goes "to disk":
 *
 * - A dirty buffer is evicted (or flushed, e.g. init forks).  If it holds the
 *   target page we keep a copy, so that a later read gets it back; any other
 *   page was only touched as a side effect of replaying a record (a skipped
 *   block handed out as a throwaway buffer, a visibility map or free space
 *   map page) and is thrown away.
 * - A page is read that is not in the pool: the kept target copy if there is
 *   one, else zeroes ("new page"), which the redo routines treat as a page
 *   that does not exist yet.
 * - Relation sizes: every fork exists and is MaxBlockNumber blocks long, so
 *   that XLogReadBufferExtended() and the visibility map / free space map
 *   code never try to extend a relation block by block up to the page they
 *   want.
 *
 * PostgreSQL 18 reads through its AIO subsystem: smgrstartreadv() gets an IO
 * handle to start the read on.  We fill the buffers from memory and complete
 * the handle at once (pgaio_io_readv_done_in_memory(), our patch), so no IO
 * method, IO worker or system call is involved.
 *
 * src/backend/walredo/inmem_smgr.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/block.h"
#if PG_VERSION_NUM >= 180000
#include "port/pg_iovec.h"
#include "storage/aio.h"
#endif
#include "walredo_internal.h"

/* The one page whose write-outs we keep */
static BufferTag kept_tag;
static bool kept_tag_valid = false;
static bool kept_page_valid = false;
static PGAlignedBlock kept_page;

void
walredo_smgr_reset(const BufferTag *target)
{
	kept_tag = *target;
	kept_tag_valid = true;
	kept_page_valid = false;
}

static bool
is_kept_page(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum)
{
	BufferTag	tag;

	if (!kept_tag_valid)
		return false;
	WR_INIT_TAG(tag, WR_SMGR_REL(reln), forknum, blocknum);
	return WR_TAGS_EQUAL(tag, kept_tag);
}

static void
inmem_open(SMgrRelation reln)
{
}

static void
inmem_close(SMgrRelation reln, ForkNumber forknum)
{
}

static void
inmem_create(SMgrRelation reln, ForkNumber forknum, bool isRedo)
{
}

static bool
inmem_exists(SMgrRelation reln, ForkNumber forknum)
{
	return true;
}

static void
inmem_unlink(WrRelFileBackend rnode, ForkNumber forknum, bool isRedo)
{
}

/* Keep a write-out of the target page, forget any other */
static void
keep_if_target(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			   const void *buffer)
{
	if (is_kept_page(reln, forknum, blocknum))
	{
		memcpy(kept_page.data, buffer, BLCKSZ);
		kept_page_valid = true;
	}
}

/* What a read of one block gives: the kept target copy, else a new page */
static void
read_block(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
		   void *buffer)
{
	if (kept_page_valid && is_kept_page(reln, forknum, blocknum))
		memcpy(buffer, kept_page.data, BLCKSZ);
	else
		memset(buffer, 0, BLCKSZ);
}

#if PG_VERSION_NUM >= 180000

static void
inmem_writev(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			 const void **buffers, BlockNumber nblocks, bool skipFsync)
{
	for (BlockNumber i = 0; i < nblocks; i++)
		keep_if_target(reln, forknum, blocknum + i, buffers[i]);
}

static void
inmem_extend(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			 const void *buffer, bool skipFsync)
{
	keep_if_target(reln, forknum, blocknum, buffer);
}

/* Extension with zeroes (bufmgr's ExtendBufferedRel): zero pages written */
static void
inmem_zeroextend(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
				 int nblocks, bool skipFsync)
{
	static const PGIOAlignedBlock zeroes;

	for (int i = 0; i < nblocks; i++)
		keep_if_target(reln, forknum, blocknum + i, zeroes.data);
}

static bool
inmem_prefetch(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			   int nblocks)
{
	return true;
}

/* Any run of blocks can be read in one go; the buffer manager caps it */
static uint32
inmem_maxcombine(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum)
{
	return PG_IOV_MAX;
}

static void
inmem_readv(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			void **buffers, BlockNumber nblocks)
{
	for (BlockNumber i = 0; i < nblocks; i++)
		read_block(reln, forknum, blocknum + i, buffers[i]);
}

/*
 * The buffer manager's only way to read in 18.  The data is copied now and
 * the IO completed on the spot, with md.c's completion callback (it turns
 * bytes into blocks) before the buffer manager's, as for a real read.
 */
static void
inmem_startreadv(PgAioHandle *ioh, SMgrRelation reln, ForkNumber forknum,
				 BlockNumber blocknum, void **buffers, BlockNumber nblocks)
{
	inmem_readv(reln, forknum, blocknum, buffers, nblocks);

	pgaio_io_set_target_smgr(ioh, reln, forknum, blocknum, nblocks, false);
	pgaio_io_register_callbacks(ioh, PGAIO_HCB_MD_READV, 0);
	pgaio_io_readv_done_in_memory(ioh, nblocks, (uint64) blocknum * BLCKSZ,
								  nblocks * BLCKSZ);
}

static void
inmem_registersync(SMgrRelation reln, ForkNumber forknum)
{
}

/* Only IO workers ask for a file descriptor, and we have neither */
static int
inmem_fd(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
		 uint32 *off)
{
	elog(ERROR, "the in-memory storage manager has no files");
	return -1;					/* keep compiler quiet */
}

#else							/* PostgreSQL 15 */

static void
inmem_write(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			char *buffer, bool skipFsync)
{
	keep_if_target(reln, forknum, blocknum, buffer);
}

static void
inmem_extend(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			 char *buffer, bool skipFsync)
{
	inmem_write(reln, forknum, blocknum, buffer, skipFsync);
}

static bool
inmem_prefetch(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum)
{
	return true;
}

static void
inmem_read(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
		   char *buffer)
{
	read_block(reln, forknum, blocknum, buffer);
}

#endif							/* PostgreSQL 15 */

static void
inmem_writeback(SMgrRelation reln, ForkNumber forknum,
				BlockNumber blocknum, BlockNumber nblocks)
{
}

static BlockNumber
inmem_nblocks(SMgrRelation reln, ForkNumber forknum)
{
	return MaxBlockNumber;
}

static void
inmem_truncate(SMgrRelation reln, ForkNumber forknum,
			   BlockNumber old_blocks, BlockNumber nblocks)
{
}

static void
inmem_immedsync(SMgrRelation reln, ForkNumber forknum)
{
}

const f_smgr walredo_smgr_switch[] = {
	{
		.smgr_init = NULL,
		.smgr_shutdown = NULL,
		.smgr_open = inmem_open,
		.smgr_close = inmem_close,
		.smgr_create = inmem_create,
		.smgr_exists = inmem_exists,
		.smgr_unlink = inmem_unlink,
		.smgr_extend = inmem_extend,
		.smgr_prefetch = inmem_prefetch,
#if PG_VERSION_NUM >= 180000
		.smgr_zeroextend = inmem_zeroextend,
		.smgr_maxcombine = inmem_maxcombine,
		.smgr_readv = inmem_readv,
		.smgr_startreadv = inmem_startreadv,
		.smgr_writev = inmem_writev,
		.smgr_registersync = inmem_registersync,
		.smgr_fd = inmem_fd,
#else
		.smgr_read = inmem_read,
		.smgr_write = inmem_write,
#endif
		.smgr_writeback = inmem_writeback,
		.smgr_nblocks = inmem_nblocks,
		.smgr_truncate = inmem_truncate,
		.smgr_immedsync = inmem_immedsync,
	}
};
