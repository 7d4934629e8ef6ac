/*-------------------------------------------------------------------------
 *
 * walredo.h
 *	  Entry point of "postgres --wal-redo", the page-at-a-time WAL redo
 *	  helper driven by the pageserver.  See docs/walredo.md.
 *
 * src/include/walredo/walredo.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALREDO_H
#define WALREDO_H

#if PG_VERSION_NUM >= 180000
pg_noreturn extern void WalRedoMain(int argc, char *argv[]);
#else
extern void WalRedoMain(int argc, char *argv[]) pg_attribute_noreturn();
#endif

#endif							/* WALREDO_H */
