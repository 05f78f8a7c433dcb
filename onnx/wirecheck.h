/* wirecheck.h: validates protobuf wire bytes against a message descriptor
 * before protobuf-c unpacks them. protobuf-c recurses without a depth limit
 * and reports no position; this pass bounds nesting and names the exact
 * field path and byte offset of the first defect. */
#ifndef OQ_WIRECHECK_H
#define OQ_WIRECHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Checks that data[0..len) is a well-formed encoding of desc: every tag,
 * varint and length in bounds, wire types matching known fields, packed
 * payloads whole, no groups, strings without NUL bytes, and message nesting
 * at most max_depth. root names the message in errors ("model"). */
oq_status oq_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                        size_t len, int max_depth, const char *root, oq_error *err);

#endif
