/*
 * handlers.h — what each route does (handlers.c): handle_* acts on a complete request
 * (decodes it and hands it to the engine, or answers at once), answer_* encodes the engine's
 * answer. routes.c names them in its table; http.c calls them.
 */
#ifndef COFFER_SERVER_HANDLERS_H
#define COFFER_SERVER_HANDLERS_H

#include <microhttpd.h>

typedef struct request request; /* http.h */

/* Every write route (accounts, transfers, posting and voiding holds). */
enum MHD_Result handle_write(request *r);
enum MHD_Result handle_account(request *r);
enum MHD_Result handle_history(request *r);
enum MHD_Result handle_transfer(request *r);
enum MHD_Result handle_holds(request *r);
enum MHD_Result handle_verify(request *r);
enum MHD_Result handle_metrics(request *r);
enum MHD_Result handle_health(request *r);
enum MHD_Result handle_webhooks(request *r);
enum MHD_Result handle_webhook(request *r);
enum MHD_Result handle_webhook_enable(request *r);

enum MHD_Result answer_write(request *r);
/* A request's end (http.c's completion notice): a write the engine applied whose answer did
 * not reach the client is logged and counted, since its client cannot know the outcome. */
void write_completed(request *r, enum MHD_RequestTerminationCode reason);
enum MHD_Result answer_account(request *r);
enum MHD_Result answer_history(request *r);
enum MHD_Result answer_transfer(request *r);
enum MHD_Result answer_holds(request *r);
enum MHD_Result answer_verify(request *r);
enum MHD_Result answer_metrics(request *r);

#endif
