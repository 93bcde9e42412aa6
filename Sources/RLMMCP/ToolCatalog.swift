import MCP

/// The tools SwiftRLM serves over MCP, with their input and output schemas (contract 4).
enum ToolCatalog {
    static let rlmQuery = "rlm_query"
    static let executePython = "execute_python"
    static let loadContext = "load_context"
    static let listSessions = "list_sessions"
    static let closeSession = "close_session"

    /// The arguments each tool takes, in the order messages list them.
    static let arguments: [String: [String]] = [
        rlmQuery: [
            "query", "context_ids", "paths", "session_id", "max_iterations", "max_depth", "max_tokens", "max_cost",
            "timeout",
        ],
        executePython: ["code", "session_id"],
        loadContext: ["path", "text", "name"],
        listSessions: [],
        closeSession: ["session_id"],
    ]

    static let tools: [Tool] = [
        Tool(
            name: rlmQuery, title: "Ask a Recursive Language Model",
            description: """
                Answers a question over contexts far larger than a model's window: a root model explores the \
                context in a sandboxed Python REPL, calling sub-models on pieces of it, and returns a final answer. \
                Name contexts by id (from load_context) or by path beneath the server's root directories; or ask a \
                follow-up in a session (session_id from execute_python or an earlier question), whose REPL \
                variables persist. Budgets narrow the server's own; they cannot raise them.
                """,
            inputSchema: object(
                [
                    "query": string("The question."),
                    "context_ids": strings("Context ids from load_context."),
                    "paths": strings("Files or directories beneath the server's --root directories."),
                    "session_id": string(
                        "A session to ask in (its contexts and budgets were set when it opened); leave context_ids, "
                            + "paths and the budgets out with it."),
                    "max_iterations": integer("Root iterations.", minimum: 1, maximum: 1000),
                    "max_depth": integer("Recursion depth of rlm_query inside the REPL.", minimum: 0, maximum: 8),
                    "max_tokens": integer("Tokens for the whole run tree.", minimum: 1),
                    "max_cost": number("USD for the whole run tree.", maximum: 1e9),
                    "timeout": number("Wall-clock seconds.", maximum: 86_400),
                ], required: ["query"]),
            annotations: .init(title: "Ask a Recursive Language Model", readOnlyHint: false, openWorldHint: true),
            outputSchema: object(
                [
                    "status": .object([
                        "type": "string", "enum": ["answered", "budget_exhausted", "no_answer"],
                        "description": "How the run ended.",
                    ]),
                    "answer": nullable("string", "The final answer; null when the run ended without one."),
                    "reason": nullable("string", "Why there is no answer, when there is none."),
                    "iterations": .object(["type": "integer", "description": "Root iterations used."]),
                    "usage": usageSchema,
                    "trajectory": .object(["type": "string", "description": "The run's trajectory id."]),
                    "model": .object(["type": "string", "description": "The root model."]),
                    "session_id": nullable("string", "The session the question was asked in."),
                    "duration_ms": .object(["type": "number"]),
                ],
                required: ["status", "answer", "iterations", "usage", "trajectory"], closed: false)
        ),
        Tool(
            name: executePython, title: "Run Python in a sandboxed REPL",
            description: """
                Runs Python code in a session's sandboxed REPL (no network, no host files). Variables persist \
                between calls with the same session_id; without one a new session is opened and its id returned. \
                The session's contexts, if any, are in the variable `context`. Returns stdout, stderr, the \
                exception raised (if any) and whether the cell timed out.
                """,
            inputSchema: object(
                [
                    "code": string("The Python code to run."),
                    "session_id": string("The session whose REPL runs it; a new session when absent."),
                ], required: ["code"]),
            annotations: .init(title: "Run Python in a sandboxed REPL", readOnlyHint: false, openWorldHint: false),
            outputSchema: object(
                [
                    "session_id": .object(["type": "string"]),
                    "stdout": .object(["type": "string"]),
                    "stderr": .object(["type": "string"]),
                    "error": .object([
                        "type": ["object", "null"],
                        "properties": .object([
                            "type": .object(["type": "string"]), "message": .object(["type": "string"]),
                            "traceback": .object(["type": "string"]),
                        ]),
                        "description": "The exception the cell raised; null when it ran to the end.",
                    ]),
                    "timed_out": .object(["type": "boolean"]),
                    "state_lost": .object([
                        "type": "boolean",
                        "description": "The sandbox was killed: the REPL's variables are gone.",
                    ]),
                    "memory_exceeded": .object(["type": "boolean"]),
                    "duration_ms": .object(["type": "number"]),
                ],
                required: ["session_id", "stdout", "stderr", "error", "timed_out"], closed: false)
        ),
        Tool(
            name: loadContext, title: "Load a context",
            description: """
                Makes a context for rlm_query: either text (stored by the server), or a path to a file or \
                directory beneath the server's --root directories (read when a question uses it; a path that \
                leaves a root, through .. or a symbolic link, is refused). Returns the context's id.
                """,
            inputSchema: object(
                [
                    "path": string("A file or directory beneath the server's roots (give path or text)."),
                    "text": string("The context itself (give path or text)."),
                    "name": string("A label for the context."),
                ], required: []),
            annotations: .init(title: "Load a context", readOnlyHint: false, openWorldHint: false),
            outputSchema: object(
                [
                    "id": .object(["type": "string", "description": "The context id, for rlm_query's context_ids."]),
                    "name": nullable("string", "The label."),
                    "bytes": nullable("integer", "The size of a text context; null for a path, read at each use."),
                    "source": .object(["type": "string", "enum": ["text", "path"]]),
                ], required: ["id", "source"], closed: false)
        ),
        Tool(
            name: listSessions, title: "List sessions",
            description: "Lists your open sessions (REPLs kept across calls): ids, contexts, turns, when they expire.",
            inputSchema: object([:], required: []),
            annotations: .init(title: "List sessions", readOnlyHint: true, openWorldHint: false),
            outputSchema: object(
                [
                    "sessions": .object([
                        "type": "array",
                        "items": object(
                            [
                                "id": .object(["type": "string"]),
                                "created": .object(["type": "integer", "description": "Unix seconds."]),
                                "expires_at": .object(["type": "integer", "description": "Unix seconds."]),
                                "context_ids": .object(["type": "array", "items": .object(["type": "string"])]),
                                "turns": .object(["type": "integer"]),
                                "busy": .object(["type": "boolean"]),
                            ], required: ["id", "created", "expires_at", "context_ids", "turns", "busy"],
                            closed: false),
                    ])
                ], required: ["sessions"], closed: false)
        ),
        Tool(
            name: closeSession, title: "Close a session",
            description: "Closes one of your sessions: its sandbox is killed and its variables are gone.",
            inputSchema: object(["session_id": string("The session to close.")], required: ["session_id"]),
            annotations: .init(title: "Close a session", readOnlyHint: false, destructiveHint: true),
            outputSchema: object(
                ["session_id": .object(["type": "string"]), "closed": .object(["type": "boolean"])],
                required: ["session_id", "closed"], closed: false)
        ),
    ]

    // MARK: - Schema pieces

    private static let usageSchema: Value = object(
        [
            "input_tokens": .object(["type": "integer"]), "output_tokens": .object(["type": "integer"]),
            "total_tokens": .object(["type": "integer"]), "cost_usd": .object(["type": "number"]),
            "model_calls": .object(["type": "integer"]), "subcalls": .object(["type": "integer"]),
        ], required: ["input_tokens", "output_tokens", "total_tokens", "cost_usd"], closed: false)

    private static func object(_ properties: [String: Value], required: [String], closed: Bool = true) -> Value {
        .object([
            "type": "object", "properties": .object(properties), "required": .array(required.map { .string($0) }),
            "additionalProperties": .bool(!closed),
        ])
    }

    private static func string(_ description: String) -> Value {
        .object(["type": "string", "description": .string(description)])
    }

    private static func strings(_ description: String) -> Value {
        .object(["type": "array", "items": .object(["type": "string"]), "description": .string(description)])
    }

    private static func integer(_ description: String, minimum: Int, maximum: Int? = nil) -> Value {
        var schema: [String: Value] = [
            "type": "integer", "minimum": .int(minimum), "description": .string(description),
        ]
        if let maximum { schema["maximum"] = .int(maximum) }
        return .object(schema)
    }

    private static func number(_ description: String, maximum: Double) -> Value {
        .object([
            "type": "number", "exclusiveMinimum": .int(0), "maximum": .double(maximum),
            "description": .string(description),
        ])
    }

    private static func nullable(_ type: String, _ description: String) -> Value {
        .object(["type": .array([.string(type), "null"]), "description": .string(description)])
    }
}
