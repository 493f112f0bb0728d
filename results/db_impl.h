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
    sqlite3_stmt *find_point;       /* --resume's lookup, by dy__db_prepare_writes */
    char error[1024];
    char path[];     /* as given to dy_db_open, to name the file in messages */
};

/* A fresh random identifier for runs.uuid and points.uuid, as SQL. */
#define DY_NEW_UUID_SQL "lower(hex(randomblob(16)))"

/* Records "PATH: what: <sqlite's message>" as the last error; returns DY_E_DB. */
int dy__db_fail(dy_db *db, const char *what);

/* The columns of points that struct dy_point holds, in table order (the
 * names of DESIGN.md section 7 and a few more): what exports write. */
int dy__point_column_count(void);
const char *dy__point_column_name(int i);

/* Prepares the insert statements; dy_db_close finalizes them. */
int dy__db_prepare_writes(dy_db *db);

#endif
