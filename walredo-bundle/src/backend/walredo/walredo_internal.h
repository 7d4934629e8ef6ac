/*-------------------------------------------------------------------------
 *
 * walredo_internal.h
 *	  Interfaces shared by walredo.c and inmem_smgr.c.
 *
 * src/backend/walredo/walredo_internal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_INTERNAL_H
#define WALREDO_INTERNAL_H

#include "storage/buf_internals.h"
#include "storage/smgr.h"

/* Storage manager switch (one entry) installed by the --wal-redo mode */
extern const f_smgr walredo_smgr_switch[];

/*
 * Forget every stored page and remember "target" as the only page whose
 * write-outs are kept from now on.
 */
extern void walredo_smgr_reset(const BufferTag *target);

#endif							/* WALREDO_INTERNAL_H */
