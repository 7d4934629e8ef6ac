/*-------------------------------------------------------------------------
 *
 * walredo_internal.h
 *	  Interfaces shared by walredo.c and inmem_smgr.c, and the few names
 *	  that differ between the PostgreSQL major versions we build for.
 *
 * src/backend/walredo/walredo_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_INTERNAL_H
#define WALREDO_INTERNAL_H

#include "storage/buf_internals.h"
#include "storage/smgr.h"

/*
 * PostgreSQL 15 and 18 (16 and 17 were never built or tested).  16 renamed
 * RelFileNode to RelFileLocator and flattened it into BufferTag; 17 replaced
 * BackendId by ProcNumber.  WR_* hide those renames; the rest of the
 * differences (storage manager API, AIO, shared memory set-up) are #if blocks
 * in the .c files.
 */
#if PG_VERSION_NUM >= 180000 && PG_VERSION_NUM < 190000
typedef RelFileLocator WrRelFile;
typedef RelFileLocatorBackend WrRelFileBackend;

#define WR_SMGR_REL(reln)			((reln)->smgr_rlocator.locator)
#define WR_REL_SPC(rel)				((rel).spcOid)
#define WR_REL_DB(rel)				((rel).dbOid)
#define WR_REL_NUMBER(rel)			((rel).relNumber)
#define WR_REL_EQUAL(a, b)			RelFileLocatorEquals(a, b)
#define WR_TAG_REL(tag)				BufTagGetRelFileLocator(&(tag))
#define WR_INIT_TAG(tag, rel, fork, blk)	InitBufferTag(&(tag), &(rel), fork, blk)
#define WR_TAGS_EQUAL(a, b)			BufferTagsEqual(&(a), &(b))
#define WR_NO_BACKEND				INVALID_PROC_NUMBER
#elif PG_VERSION_NUM >= 150000 && PG_VERSION_NUM < 160000
typedef RelFileNode WrRelFile;
typedef RelFileNodeBackend WrRelFileBackend;

#define WR_SMGR_REL(reln)			((reln)->smgr_rnode.node)
#define WR_REL_SPC(rel)				((rel).spcNode)
#define WR_REL_DB(rel)				((rel).dbNode)
#define WR_REL_NUMBER(rel)			((rel).relNode)
#define WR_REL_EQUAL(a, b)			RelFileNodeEquals(a, b)
#define WR_TAG_REL(tag)				((tag).rnode)
#define WR_INIT_TAG(tag, rel, fork, blk)	INIT_BUFFERTAG(tag, rel, fork, blk)
#define WR_TAGS_EQUAL(a, b)			BUFFERTAGS_EQUAL(a, b)
#define WR_NO_BACKEND				InvalidBackendId
#else
#error "the --wal-redo mode is written for PostgreSQL 15 and 18 only"
#endif

/* Storage manager switch (one entry) installed by the --wal-redo mode */
extern const f_smgr walredo_smgr_switch[];

/*
 * Forget every stored page and remember "target" as the only page whose
 * write-outs are kept from now on.
 */
extern void walredo_smgr_reset(const BufferTag *target);

#endif							/* WALREDO_INTERNAL_H */
