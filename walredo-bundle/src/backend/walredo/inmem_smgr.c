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
 * src/backend/walredo/inmem_smgr.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/block.h"
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
	return kept_tag_valid &&
		RelFileNodeEquals(reln->smgr_rnode.node, kept_tag.rnode) &&
		forknum == kept_tag.forkNum &&
		blocknum == kept_tag.blockNum;
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
inmem_unlink(RelFileNodeBackend rnode, ForkNumber forknum, bool isRedo)
{
}

static void
inmem_write(SMgrRelation reln, ForkNumber forknum, BlockNumber blocknum,
			char *buffer, bool skipFsync)
{
	if (is_kept_page(reln, forknum, blocknum))
	{
		memcpy(kept_page.data, buffer, BLCKSZ);
		kept_page_valid = true;
	}
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
	if (kept_page_valid && is_kept_page(reln, forknum, blocknum))
		memcpy(buffer, kept_page.data, BLCKSZ);
	else
		memset(buffer, 0, BLCKSZ);
}

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
		.smgr_read = inmem_read,
		.smgr_write = inmem_write,
		.smgr_writeback = inmem_writeback,
		.smgr_nblocks = inmem_nblocks,
		.smgr_truncate = inmem_truncate,
		.smgr_immedsync = inmem_immedsync,
	}
};
