"""The CIELR edit graph: perceive -> decide (<-> gather, bounded; -> search -> decide, once, when the plan found
no target) -> approve -> execute -> verify.

    graph = build_edit_graph()
    graph.invoke({"instruction": "..."}, context=EditContext(workspace, model))

The compiled graph can be a node (subgraph) of another app whose runtime context is an `EditContext`.
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from . import nodes
from .state import EditContext, EditState


def build_edit_graph(checkpointer: BaseCheckpointSaver | None = None, name: str = "cielr_edit") -> CompiledStateGraph:
    """Compile the edit state machine (pass a checkpointer for interrupts/approval and resumable runs)."""
    g = StateGraph(EditState, context_schema=EditContext)
    g.add_node("perceive", nodes.perceive)
    g.add_node("decide", nodes.decide)
    g.add_node("gather", nodes.gather)
    g.add_node("search", nodes.search)
    g.add_node("approve", nodes.approve)
    g.add_node("execute", nodes.execute)
    g.add_node("verify", nodes.verify)
    g.add_edge(START, "perceive")
    g.add_edge("perceive", "decide")
    g.add_conditional_edges("decide", nodes.route_after_decide,
                            {"gather": "gather", "search": "search", "approve": "approve"})
    g.add_edge("gather", "decide")
    g.add_edge("search", "decide")
    g.add_conditional_edges("approve", nodes.route_after_approve, {"execute": "execute", "end": END})
    g.add_edge("execute", "verify")
    g.add_edge("verify", END)
    return g.compile(checkpointer=checkpointer, name=name)
