"""The local CodePipeline: a loopback server speaking the CodePipeline wire protocol.

Imported only by the CLI and by tests; never by the Lambda path.

Modules::

    server.py       one WSGI app: CodePipeline targets to the engine, the rest to moto
    ops.py          the operation table: validate, dispatch, paginate
    validation.py   request checks read from botocore's own service model
    engine.py       EngineSettings, Engine: state, lock, scheduler thread
    actiontypes.py  built-in and custom action types
    pipelines.py    structural checks of pipeline declarations
    executions.py   pipeline and action executions, stage/runOrder progression
    jobs.py         the custom-action job state machine
    aws.py          the engine's S3/KMS/STS calls (to moto, on the same endpoint)
    views.py        answers in botocore's output shapes

Behaviour where AWS documents nothing, or where the emulator is simpler (the
timings are :class:`~cpworker.local.engine.EngineSettings` fields):

* Results (PutJobSuccessResult/PutJobFailureResult) are accepted only from jobs in
  InProgress, i.e. acknowledged; anything else answers InvalidJobStateException.
* AcknowledgeJob with the current nonce is idempotent and answers the job's status.
* A Dispatched job not acknowledged within ``redispatch_after_s`` (60 s) is dispatched
  again by the next poll, with a new nonce; the old nonce then fails.
* A continuation queues the next job ``continuation_delay_s`` (1 s) after the result.
* A job with no result ``job_timeout_s`` (1 h; AWS: 24 h) after its creation times
  out and fails its action with error code ``JobTimedOut``.
* PollForJobs without queryParam on a type with a queryable property returns jobs
  of any value (the User Guide's behaviour); a queryParam naming another property,
  or any queryParam on a type without one, answers ValidationException.
* Creating a custom action type that exists with an identical definition returns it
  (and restores it if deleted); a different definition answers ValidationException.
* Execution modes: SUPERSEDED and QUEUED let one execution hold a stage at a time;
  a newer execution waiting for a stage supersedes an older waiting one (SUPERSEDED),
  or they enter oldest first (QUEUED); PARALLEL executions never wait.
* In a stage, a failed action fails the stage once the other actions of its runOrder
  group have finished; later groups do not run.
* Only the S3 source (Source/AWS/S3/1) and custom actions run. Other AWS action types
  (Invoke/AWS/Lambda/1) validate in pipelines but fail when they run.
* Variables ``#{variables.name}`` and ``#{Namespace.Name}`` resolve in action
  configuration; an unresolved one fails the action with ConfigurationError.
* Secret configuration values are in job data, masked as ``****`` in
  ListActionExecutions, and returned as stored by GetPipeline.
"""
