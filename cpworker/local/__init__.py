"""The local CodePipeline: a loopback server speaking the CodePipeline wire protocol.

Imported only by the CLI and by tests; never by the Lambda path.

Modules::

    server.py       one WSGI app: CodePipeline targets to the engine, the rest to moto
    ops.py          the operation table: validate, dispatch, paginate
    validation.py   request checks read from botocore's own service model
    engine.py       EngineSettings, Engine: state, lock, scheduler thread
    actiontypes.py  built-in, custom and declared action types
    declarations.py action-type definition files (an ``actionType`` with an executor)
    pipelines.py    structural checks of pipeline declarations
    executions.py   pipeline and action executions, stage/runOrder progression
    jobs.py         the job state machine (custom-action and Lambda jobs)
    thirdparty.py   third-party jobs: client id and token per action, the five operations
    lambdas.py      FunctionName -> handler registry; invocations as subprocesses
    lambda_runner.py  ``python -m cpworker.local.lambda_runner REF``: one invocation
    lambda_context.py the Lambda-like ``context`` (shared with ``cpworker invoke``)
    integration.py  Lambda executors: the integration-model event, reading the reply
    private.py      ``CpworkerLocal.*`` operations: standalone Lambda jobs, result counts
    aws.py          the engine's S3/KMS/STS calls (to moto, on the same endpoint)
    events.py       CodePipeline's EventBridge events; SQS and Lambda targets of rules
    views.py        answers in botocore's output shapes
    hosts.py        loopback only: the listening address and the Host header check
    faults.py       injected faults (throttling, 5xx, resets, lost answers)
    s3_reads.py     GetObject bodies read a chunk at a time (ranges without a whole read)
    credentials.py  job credential expiry, and who signed a request
    wire.py         error answers the server writes itself (JSON 1.1, S3 XML, text)

Behaviour where AWS documents nothing, or where the emulator is simpler (the
timings are :class:`~cpworker.local.engine.EngineSettings` fields):

* Results (PutJobSuccessResult/PutJobFailureResult) are accepted only from jobs in
  InProgress, i.e. acknowledged; anything else answers InvalidJobStateException.
  Every one that reaches a job is counted (``CpworkerLocal.GetResultCounts``).
* GetJobDetails answers for a job in any state, finished ones included, each time with
  fresh artifact credentials. With ``credential_ttl_s`` (default: none) credentials
  expire that long after they were issued (PollForJobs then issues fresh ones at each
  dispatch) and S3 refuses them with ExpiredToken.
* Only requests whose Host is a loopback name or address with the server's port are
  answered (else 403), and no CORS ones: a preflight gets 403, and moto's
  ``Access-Control-*`` headers are removed.
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
* Every pipeline, stage and action state change is published to the default event
  bus (moto's EventBridge) as CodePipeline's documented event; rules deliver it to SQS
  queues, and to the functions of ``--function`` when a target is a Lambda ARN. An
  action's STARTED event goes out once its job can be polled. Delivery is in order
  and immediate; EventBridge promises neither.
* Execution modes: SUPERSEDED and QUEUED let one execution hold a stage at a time;
  a newer execution waiting for a stage supersedes an older waiting one (SUPERSEDED),
  or they enter oldest first (QUEUED); PARALLEL executions never wait.
* In a stage, a failed action fails the stage once the other actions of its runOrder
  group have finished; later groups do not run.
* The S3 source (Source/AWS/S3/1), custom actions, Lambda invoke actions
  (Invoke/AWS/Lambda/1) and actions of types with a Lambda executor run.
* Lambda invoke actions: FunctionName maps to a handler (``module:attr`` or
  ``path/file.py:attr``; ``LocalCodePipeline(functions=...)``,
  ``engine.register_function``, ``cpworker local --function``/``--functions-file``).
  An unmapped FunctionName fails the action at once (ConfigurationError, naming the
  known functions). Otherwise the engine creates a job, InProgress at once, and
  invokes the function asynchronously with ``{"CodePipeline.job": {id, accountId,
  data}}`` (no actionTypeId, no pipelineContext) in a subprocess of its own: the
  server's environment without any ``AWS_*`` variable, plus ``AWS_ENDPOINT_URL`` (this
  server), ``AWS_REGION``/``AWS_DEFAULT_REGION``, dummy credentials, config files at
  /dev/null, Lambda's ``AWS_LAMBDA_*``/``AWS_EXECUTION_ENV``/``_HANDLER`` variables and
  ``CPWORKER_LOCAL=1``, then the function's own ``environment`` (reserved names refused).
  Its output is logged at INFO as ``[FunctionName request-id] line``; the event is not.
* A function is killed ``lambda_timeout_s`` (900 s) after its handler is called, or
  at its own shorter timeout (start-up and imports before the call have their own
  limit, ``lambda_init_timeout_s``, 10 s); that alone does not fail the action. A
  Lambda job with no result ``lambda_reply_window_s`` (1200 s) after its creation
  fails the action (JobTimedOut, "the Lambda function did not report a result within
  N s"); each continuation job has its own window, and there is no 24-hour overall
  limit. A function that raises is not retried (Lambda retries asynchronous
  invocations twice).
* Lambda jobs take PutJobSuccessResult/PutJobFailureResult without AcknowledgeJob;
  PollForJobs never returns them. A continuation invokes the function again, with a
  new job carrying ``continuationToken`` and fresh credentials, ``continuation_delay_s``
  after the result.
* Standalone Lambda jobs for ``cpworker invoke`` (target prefix ``CpworkerLocal.``,
  same JSON wire form, not CodePipeline operations; see :mod:`cpworker.local.private`):
  ``CreateLambdaJob {"data": JobData, "jobId"?}`` answers ``{"jobId", "event"}`` with
  fresh artifactCredentials (replacing any given) and the default key unless ``data``
  has an encryptionKey; ``DescribeJob {"jobId"}`` answers ``{"jobId", "status",
  "result": {"type": success|continuation|failure, ...the members reported},
  "nextJobId"}``. A continuation creates the follow-up job at once, with the same
  data plus the token. They time out after the reply window too.
* Third-party action types (owner ThirdParty, declared with a ``JobWorker`` executor)
  queue jobs as custom ones do, on a board of their own: PollForThirdPartyJobs answers
  ``{clientId, jobId}`` only, GetThirdPartyJobDetails the data (fresh credentials; no
  accountId, no pipelineArn nor pipelineExecutionId) and the nonce, and every operation
  but the poll needs the client token of the job's pipeline action
  (InvalidClientTokenException otherwise). Each such action has its own client id and
  token, made on first use; ``engine.third_party_client`` and
  ``CpworkerLocal.ThirdPartyClient`` read or replace them. The custom-action job APIs do
  not know third-party job ids, nor the third-party APIs custom ones (JobNotFound).
* Action types with an executor are declared with a definition file (``{"actionType":
  ActionTypeDeclaration}``; ``cpworker local --action-type``, ``LocalCodePipeline(
  action_types=...)``, ``engine.register_action_type``), checked as UpdateActionType
  checks them (a Lambda ``jobTimeout`` of at most 900 s). GetActionType answers only
  declared types; UpdateActionType replaces one (ActionTypeNotFoundException for any
  other); built-in and custom types cannot be declared over.
* An action of a type with a ``Lambda`` executor invokes the function that the
  ``lambdaFunctionArn`` names (``...:function:NAME`` → FunctionName NAME), synchronously,
  in its own process, with ``{jobId, accountId, data: {actionConfiguration (flat),
  encryptionKey, inputArtifacts, outputArtifacts, actionExecutionId, actionCredentials,
  continuationToken?}}``, and reads its return value case-insensitively (see
  :mod:`cpworker.local.integration`). An invalid reply fails the action (JobFailed,
  naming the problem), as does a function that raises or dies; a Continue invokes it
  again, with a new jobId and the State as continuationToken, ``continuation_delay_s``
  later; a function still running ``integration_job_timeout_s`` (900 s) or the type's
  ``jobTimeout`` after its call is killed and the action fails (JobTimedOut). These jobs
  are not in the job APIs.
* Variables ``#{variables.name}`` and ``#{Namespace.Name}`` resolve in action
  configuration; an unresolved one fails the action with ConfigurationError.
* Secret configuration values are in job data, masked as ``****`` in
  ListActionExecutions, and returned as stored by GetPipeline.
"""
