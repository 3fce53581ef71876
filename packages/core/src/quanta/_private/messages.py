"""Message types of the call plane. A message is a tuple whose first item is one of these.

Kept as plain ints (not an Enum) because they are compared on every message on the hot path;
the names below are the documentation of each message's shape.
"""

# --- any peer <-> any peer -----------------------------------------------------------------
HELLO = 1            # (HELLO, listen_address): first message on an owner<->worker connection
CALL = 2             # (CALL, req_id, method, args_tuple): request with a reply
REPLY = 3            # (REPLY, req_id, ok, result_or_error)
NOTIFY = 4           # (NOTIFY, method, args_tuple): one-way request
ROUTE = 5            # (ROUTE, process_id): first frame on a TCP connection to a node's port
#                      meant for one of its processes; the daemon answers one byte (1: handed
#                      over, 0: no such process) and passes the socket on (transport.py)

# --- owner -> worker ---------------------------------------------------------------------
PUSH_TASK = 10       # (PUSH_TASK, spec_tuple): see TaskSpec.wire in core_worker
CANCEL_TASK = 11     # (CANCEL_TASK, task_id, force, recursive)
STEAL = 12           # (STEAL,): give back half of the tasks not started yet
RELEASE_HELD = 13    # (RELEASE_HELD, [object_id]): refs nested in these returns may go
ACTOR_CALL = 14      # (ACTOR_CALL, (task_id, method, args, resolved, num_returns,
#                      generator, concurrency_group, attempt, job_id, fn_name)): actor_calls.py

# --- worker -> owner ---------------------------------------------------------------------
TASK_DONE = 20       # (TASK_DONE, task_id, [return_value], [contained_ids_per_return])
GEN_ITEM = 21        # (GEN_ITEM, task_id, index, return_value, contained_ids)
REQUEUE = 22         # (REQUEUE, [task_id]): pushed tasks the worker will not run after all

# --- borrower <-> owner ------------------------------------------------------------------
GET_OBJECT = 30      # (GET_OBJECT, req_id, object_id): reply OBJECT_VALUE once it is ready
OBJECT_VALUE = 31    # (OBJECT_VALUE, req_id, return_value)
BORROW_ADD = 32      # (BORROW_ADD, [object_id], ack_req_id_or_0)
BORROW_REMOVE = 33   # (BORROW_REMOVE, [object_id])
BORROW_ACK = 34      # (BORROW_ACK, req_id)

# --- owner/worker <-> node daemon ----------------------------------------------------------
LEASE_REQUEST = 40   # (LEASE_REQUEST, req_id, resources_dict, strategy, owner_address);
#                      the daemon answers (REPLY, req_id, True, "queued") when it must wait
LEASE_GRANT = 41     # (LEASE_GRANT, req_id, worker_id, worker_address, gpu_ids,
#                      [resources_dict, strategy], was_queued)
LEASE_FAIL = 42      # (LEASE_FAIL, req_id, message, [resources_dict, strategy])
LEASE_RETURN = 43    # (LEASE_RETURN, worker_id, kill)
LEASE_RECLAIM = 44   # (LEASE_RECLAIM, on): daemon -> owners: while on, return idle leases at once
WORKER_BLOCKED = 45  # (WORKER_BLOCKED,): the worker's running task waits in get
WORKER_UNBLOCKED = 46
OBJECT_SEALED = 47   # (OBJECT_SEALED, object_id_hex, size)
OBJECT_FREE = 48     # (OBJECT_FREE, [object_id_hex], recycled, origin_node_id): recycled =
#                      owner kept the file; origin: the node whose store made the object
LEASE_SPILL = 52     # (LEASE_SPILL, req_id, node_id, node_address, [resources_dict, strategy]):
#                      daemon -> owner: ask the daemon of that node for this lease instead
LEASE_CANCEL = 53    # (LEASE_CANCEL, req_id): owner -> daemon: the request's tasks are gone
LEASE_CANCELLED = 54  # (LEASE_CANCELLED, req_id, [resources_dict, strategy]): daemon -> owner:
#                      dropped (a request already granted is answered by its grant instead)
OBJECT_LOST = 55     # (OBJECT_LOST, object_id, origin_node_id, reason): borrower -> owner: every
#                      copy of the value it was given is gone; the owner rebuilds it (lineage)
#                      or sets the loss as its value, and answers GET_OBJECT calls then
OBJECT_PULL = 49     # (OBJECT_PULL, object_id_hex, puller_node_address): daemon -> daemon over
#                      TCP; the answer is raw
#                      bytes, not frames (see node/object_transfer.py)

# --- actors: node daemon <-> workers and callers ----------------------------------------------
ACTOR_CREATE = 50    # (ACTOR_CREATE, creation_dict): daemon -> the worker that becomes the actor
ACTOR_STATE = 51     # (ACTOR_STATE, actor_id, state, address, incarnation, reason):
#                      daemon -> every process that subscribed to the actor

# --- value kinds in a return_value tuple ---------------------------------------------------
VALUE_INLINE = 0     # (VALUE_INLINE, payload, buffers_or_None)
VALUE_SHM = 1        # (VALUE_SHM, size, node_id)
VALUE_ERROR = 2      # (VALUE_ERROR, payload, None): a pickled exception to raise on get
