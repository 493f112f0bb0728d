/* Internals of the results module, shared by db.c (the connection: open,
 * validate, close) and write.c (the inserts). Not for other modules. */
#ifndef DY_DB_IMPL_H
#define DY_DB_IMPL_H

#include <sqlite3.h>

#include "results.h"

struct dy_db {
    sqlite3 *conn;
    /* Prepared once at open, reset after every use. */
    sqlite3_stmt *insert_run;       /* these four by dy__db_prepare_writes */
    sqlite3_stmt *insert_device;
    sqlite3_stmt *insert_point;
    sqlite3_stmt *insert_sample;
    sqlite3_stmt *count_points;
    char error[1024];
    char path[];     /* as given to dy_db_open, to name the file in messages */
};

/* Records "PATH: what: <sqlite's message>" as the last error; returns DY_E_DB. */
int dy__db_fail(dy_db *db, const char *what);

/* Prepares the insert statements; dy_db_close finalizes them. */
int dy__db_prepare_writes(dy_db *db);

#endif
